"""Shared modules import neither torch nor TensorFlow (both paths use them; neither copies them)."""
import subprocess
import sys

from conftest import REPO

FRAMEWORK_PACKAGES = ("torch", "tf", "kernels")
# each defines absl flags on the global FLAGS, so they cannot share one process
COMMAND_LINE_MODULES = ("cnbert.eval.cli", "cnbert.runners.mrc", "cnbert.runners.classify", "cnbert.runners.ner",
                        "cnbert.runners.common")


def shared_modules():
    names = []
    for path in sorted((REPO / "cnbert").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[1] in FRAMEWORK_PACKAGES:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported_frameworks(modules):
    code = ("import importlib, sys\n"
            f"for name in {list(modules)!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_shared_modules_import_no_framework():
    modules = shared_modules()
    assert {"cnbert", "cnbert.tokenization", "cnbert.data.mrc_features", "cnbert.checkpoints.google_tf",
            "cnbert.training", "cnbert.tasks.mrc", *COMMAND_LINE_MODULES} <= set(modules)
    library = [m for m in modules if m not in COMMAND_LINE_MODULES]
    assert imported_frameworks(library) == "[]"
    for runner in COMMAND_LINE_MODULES:
        assert imported_frameworks([runner]) == "[]", runner
