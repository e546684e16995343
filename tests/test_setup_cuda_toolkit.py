"""setup.py's choice of CUDA toolkit, checked before anything compiles: a wrong CUDA_HOME used to
surface only at link time, minutes into a build, as `cannot find -lcudart`."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fake_toolkit(root: Path) -> Path:
    for name in ("bin/nvcc", "include/cuda_runtime.h", "lib64/libcudart.so.13"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / "bin" / "nvcc").chmod(0o755)
    return root


def run_setup(env_updates: dict, path_dirs: list) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("CUDA_HOME", "CUDA_PATH")}
    env.update(env_updates)
    env["PATH"] = os.pathsep.join([str(p) for p in path_dirs] + [str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    # `--name` builds nothing, but setup.py chooses the toolkit and checks it (or stops) first.
    return subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_cuda_home_without_the_runtime_is_refused_before_compiling(tmp_path):
    not_a_toolkit = tmp_path / "usr-local"
    (not_a_toolkit / "bin").mkdir(parents=True)
    run = run_setup({"CNBERT_CUDA": "1", "CUDA_HOME": str(not_a_toolkit)}, [])
    assert run.returncode != 0
    assert f"CUDA_HOME={not_a_toolkit} is not a CUDA toolkit root" in run.stderr


def test_an_nvcc_wrapper_on_path_is_followed_to_its_toolkit(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper_dir = tmp_path / "local" / "bin"  # like /usr/local/bin/nvcc: its parent's parent is no toolkit
    wrapper_dir.mkdir(parents=True)
    (wrapper_dir / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    run = run_setup({"CNBERT_CUDA": "1"}, [wrapper_dir])
    assert f"{wrapper_dir / 'nvcc'} is not inside a CUDA toolkit; using CUDA_HOME={toolkit}" in run.stderr
    assert "is not a CUDA toolkit root" not in run.stderr


def test_a_cpu_only_build_looks_for_no_toolkit(tmp_path):
    # the installed torch here is CPU-only: CNBERT_CUDA=auto has no use for a toolkit, nor for notes about one
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper_dir = tmp_path / "local" / "bin"
    wrapper_dir.mkdir(parents=True)
    (wrapper_dir / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    run = run_setup({}, [wrapper_dir])
    assert run.returncode == 0, run.stderr
    assert "CUDA" not in run.stderr and run.stdout.strip() == "cnbert"


def test_a_build_against_a_temporary_build_environment_s_torch_is_refused(tmp_path):
    # pip's build isolation installs a torch of its own choosing under pip-build-env-*: an extension
    # compiled against it may not load beside the torch the package runs with
    import torch

    site = tmp_path / "pip-build-env-abc123" / "site"
    site.mkdir(parents=True)
    (site / "torch").symlink_to(Path(torch.__file__).parent)
    run = run_setup({"PYTHONPATH": str(site)}, [])
    assert run.returncode != 0
    assert "was imported from a temporary build environment" in run.stderr
    assert "--no-build-isolation" in run.stderr
