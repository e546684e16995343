"""Print the pinned requirements from pyproject.toml, one per line, for `pip install`.

pyproject.toml is the one place versions are pinned. The Makefile installs these before the
package itself, because the C++ extension is built without build isolation against the torch
that is already installed (BUILD.md explains why).
"""
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
extras = sys.argv[1:]
unknown = [extra for extra in extras if extra not in project["optional-dependencies"]]
if unknown:
    sys.exit(f"tools/pins.py: unknown extra(s) {', '.join(unknown)}; pyproject.toml has "
             f"{', '.join(project['optional-dependencies'])}")
pins = list(project["dependencies"])
for extra in extras:
    pins += project["optional-dependencies"][extra]
print("\n".join(pins))
