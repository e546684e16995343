"""Shared modules import neither torch nor TensorFlow (both paths use them; neither copies them)."""
import os
import subprocess
import sys

from conftest import REPO

FRAMEWORK_PACKAGES = ("torch", "tf", "kernels")
# each defines absl flags on the global FLAGS, so they cannot share one process
COMMAND_LINE_MODULES = ("cnbert.runners.score", "cnbert.runners.mrc", "cnbert.runners.classify", "cnbert.runners.ner",
                        "cnbert.runners.common", "cnbert.runners.training_run", "cnbert.runners.prediction")


def shared_modules():
    names = []
    for path in sorted((REPO / "cnbert").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[1] in FRAMEWORK_PACKAGES:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


# frameworks, and the network clients the original list's modules imported at import time
# (REFERENCE.md section 5)
HEAVY_OR_NETWORK = ("torch", "tensorflow", "keras", "jax", "transformers", "huggingface_hub", "requests", "urllib3",
                    "httpx")


def imported_frameworks(modules):
    code = ("import importlib, sys\n"
            f"for name in {list(modules)!r}: importlib.import_module(name)\n"
            f"print(sorted(m for m in {HEAVY_OR_NETWORK!r} if m in sys.modules))")
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


def test_the_pytorch_path_imports_torch_alone():
    # transformers (and its hub client) is the reference in tests and an interop target, never an
    # import of the training path. (TensorFlow's path cannot say the same: Keras imports requests.)
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in sorted((REPO / "cnbert" / "torch").glob("*.py"))]
    assert "cnbert.torch.trainer" in modules
    assert imported_frameworks([m.removesuffix(".__init__") for m in modules] + ["cnbert.kernels"]) == "['torch']"


def without_tensorflow(tmp_path, code: str) -> subprocess.CompletedProcess:
    """Run `code` where `import tensorflow` fails, as where neither TensorFlow extra is installed."""
    fake = tmp_path / "site" / "tensorflow"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named tensorflow')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})


def test_without_tensorflow_a_tf_checkpoint_names_itself_and_the_extra_to_install(tmp_path):
    """TensorFlow is optional (pyproject's tf-cpu / tf-gpu extras): the torch path runs without it,
    and only a TF checkpoint, which needs it to be read, says so."""
    prefix = tmp_path / "bert_model.ckpt"
    prefix.with_name("bert_model.ckpt.index").write_bytes(b"")
    proc = without_tensorflow(tmp_path, f"from cnbert.checkpoints import list_tf_variables\n"
                                        f"list_tf_variables({str(prefix)!r})")
    assert proc.returncode == 1
    assert (f"ImportError: {prefix} is a TensorFlow checkpoint, and reading one needs TensorFlow (No module named "
            "tensorflow): install cnbert's tf-cpu extra, or tf-gpu for NVIDIA GPUs") in proc.stderr, proc.stderr
    proc = without_tensorflow(tmp_path, "import cnbert.tf")
    assert "install cnbert's tf-cpu extra, or tf-gpu for NVIDIA GPUs" in proc.stderr, proc.stderr[-2000:]


def test_the_tensorflow_extras_pin_one_version_and_make_installs_the_cpu_one():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [pin for pin in project["dependencies"] if pin.startswith(("tensorflow", "keras"))]
    cpu, gpu = (project["optional-dependencies"][extra] for extra in ("tf-cpu", "tf-gpu"))
    version = lambda pins, name: next(pin.split("==")[1] for pin in pins if pin.split("==")[0] == name)
    assert version(cpu, "tensorflow-cpu") == version(gpu, "tensorflow[and-cuda]")
    assert version(cpu, "keras") == version(gpu, "keras")
    pins = subprocess.run([sys.executable, "tools/pins.py", "tf-cpu", "test", "build"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.split()
    assert set(cpu) <= set(pins) and "TF_EXTRA ?= tf-cpu" in (REPO / "Makefile").read_text()


def test_make_reinstalls_when_the_tensorflow_extra_changes_and_removes_the_other_flavour(tmp_path):
    """`make install TF_EXTRA=tf-gpu` in a set-up clone: the stamp of a tf-cpu install does not
    stand for it, and the install first removes tensorflow-cpu, whose files tf-gpu's would overwrite."""
    for name in ("Makefile", "pyproject.toml", "setup.py"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    stamp = tmp_path / ".venv" / ".cnbert-installed-tf-cpu"
    stamp.touch()
    os.utime(stamp, (os.path.getmtime(tmp_path / "setup.py") + 60,) * 2)  # newer than what it depends on

    def dry_run(*args):
        return subprocess.run(["make", "-n", "install", *args], cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout

    assert "Nothing to be done" in dry_run()
    switch = dry_run("TF_EXTRA=tf-gpu")
    assert "tools/pins.py tf-gpu test build" in switch and "pip show --quiet tensorflow-cpu" in switch
    assert switch.index("uninstall --quiet --yes tensorflow tensorflow-cpu") < switch.index("pip install --quiet -r")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "pins.py"), "tf-gpus"], capture_output=True, text=True)
    assert proc.returncode == 1 and "tools/pins.py: unknown extra(s) tf-gpus; pyproject.toml has tf-cpu, tf-gpu" \
        in proc.stderr
