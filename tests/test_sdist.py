"""The source distribution holds the whole project: setup.py names only the C++ files it compiles,
so without MANIFEST.in the sdist lacked the extension's headers and CUDA sources and did not build."""
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# only the CI's wiring and git's own file stay out
NOT_SHIPPED = {".ci/run", ".gitignore"}


def tracked_files() -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the files an sdist must hold are the ones git tracks")
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [name for name in listing.stdout.splitlines() if (ROOT / name).is_file()]


def test_the_sdist_holds_every_tracked_file_the_build_demo_and_tests_need(tmp_path):
    source = tmp_path / "source"
    tracked = tracked_files()
    for name in tracked:  # a copy of the working tree: the build writes its egg-info beside setup.py
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=source,
                   capture_output=True, text=True, check=True, timeout=300)
    (archive,) = (tmp_path / "dist").glob("cnbert-*.tar.gz")
    with tarfile.open(archive) as sdist:
        shipped = {member.name.split("/", 1)[1] for member in sdist.getmembers() if member.isfile()}
    missing = sorted(set(tracked) - shipped - NOT_SHIPPED)
    assert not missing, f"not in the sdist: {missing}"
    assert {"csrc/kernels.h", "csrc/cuda/common.cuh", "MANIFEST.in", "flags/demo.flags"} <= shipped
