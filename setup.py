"""Builds cnbert and its C++/CUDA extension `cnbert._C`. Metadata and pinned dependencies live in
pyproject.toml; BUILD.md explains the options below.

The extension is compiled against the torch that is already installed, so build without isolation:
    pip install --no-build-isolation --no-deps -e .

Environment:
    CNBERT_CUDA=auto|1|0   auto (default): CUDA kernels when torch has CUDA and nvcc is found;
                           1: CUDA kernels or fail; 0: CPU kernels only.
    TORCH_CUDA_ARCH_LIST   GPU architectures to compile for (default "8.0;9.0+PTX").
    MAX_JOBS               parallel compile jobs (ninja).
    CUDA_HOME              the CUDA toolkit's root (found from nvcc or /usr/local/cuda if unset).
"""
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup


def is_cuda_toolkit(root: Path) -> bool:
    """A toolkit root holds nvcc, the runtime's header and its shared library."""
    return (
        (root / "bin" / "nvcc").is_file()
        and (root / "include" / "cuda_runtime.h").is_file()
        and any(any((root / lib).glob("libcudart.so*")) for lib in ("lib64", "lib"))
    )


def locate_cuda_toolkit() -> None:
    """Sets CUDA_HOME when it is unset and torch's guess would be wrong.

    torch takes the parent of the folder holding the first `nvcc` on PATH as the toolkit root.
    For a wrapper such as /usr/local/bin/nvcc (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`) that
    gives /usr/local, where compiling works but linking fails after minutes with
    `cannot find -lcudart`. This must run before torch.utils.cpp_extension is imported: it reads
    CUDA_HOME once, at import.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    candidates = [Path(nvcc).parent.parent, Path(os.path.realpath(nvcc)).parent.parent] if nvcc else []
    candidates.append(Path("/usr/local/cuda"))
    for root in candidates:
        if is_cuda_toolkit(root):
            if nvcc and root != Path(nvcc).parent.parent:
                print(f"cnbert: {nvcc} is not inside a CUDA toolkit; using CUDA_HOME={root}", file=sys.stderr)
            os.environ["CUDA_HOME"] = str(root)
            return


def torch_has_cuda() -> bool:
    """Whether the installed torch was built with CUDA (it ships libtorch_cuda), found without
    importing it: CUDA_HOME must be settled before torch.utils.cpp_extension is imported."""
    from importlib.util import find_spec

    spec = find_spec("torch")
    return bool(spec and spec.origin and any((Path(spec.origin).parent / "lib").glob("libtorch_cuda*")))


# The toolkit is looked for where CUDA kernels could be built: CNBERT_CUDA=1, or auto with a CUDA torch
# (a CPU-only build has no use for it, nor for notes about it).
_CUDA_MODE = os.environ.get("CNBERT_CUDA", "auto").strip().lower()
if _CUDA_MODE == "1" or (_CUDA_MODE == "auto" and torch_has_cuda()):
    locate_cuda_toolkit()

import torch  # noqa: E402  (after locate_cuda_toolkit, see there)
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

# pip's and pypa/build's default build isolation install a torch of their own choosing into a
# temporary environment: an extension compiled against it may not load beside the torch the
# package then runs with (another version, or CUDA where that one is CPU-only), and the package
# would quietly fall back to its slow reference ops. Refuse, and say how to build.
if any(part.startswith(("pip-build-env-", "build-env-")) for part in Path(torch.__file__).parts):
    sys.exit(f"cnbert: torch {torch.__version__} was imported from a temporary build environment ({torch.__file__}); "
             "the extension must be compiled against the torch it will run with. Install torch first, then build "
             "without isolation: pip install --no-build-isolation ..., pip wheel --no-build-isolation ..., or "
             "python -m build --no-isolation (BUILD.md).")

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def want_cuda() -> bool:
    mode = os.environ.get("CNBERT_CUDA", "auto").strip().lower()
    if mode not in {"auto", "0", "1"}:
        sys.exit(f"CNBERT_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return False
    reasons = []
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} was built without CUDA")
    toolkit = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")  # what torch will use
    if not toolkit:
        reasons.append("no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)")
    elif not is_cuda_toolkit(Path(toolkit)):
        reasons.append(f"CUDA_HOME={toolkit} is not a CUDA toolkit root (it needs bin/nvcc, "
                       "include/cuda_runtime.h and libcudart.so in lib64/ or lib/); point CUDA_HOME at one")
    if not reasons:
        return True
    if mode == "1":
        sys.exit("CNBERT_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(reasons))
    if torch.version.cuda is not None:  # a CUDA torch without a toolkit deserves a visible note
        print("cnbert: building CPU kernels only: " + "; ".join(reasons), file=sys.stderr)
    return False


def extension():
    # Relative paths: setuptools rejects absolute source paths.
    sources = ["csrc/ops.cpp", "csrc/cpu_kernels.cpp"]
    # Numbers only: macro values pass through a shell when ninja compiles.
    major, minor = torch.__version__.split(".")[:2]
    macros = [("CNBERT_TORCH_MAJOR", major), ("CNBERT_TORCH_MINOR", minor)]
    cxx_flags = ["-O3", "-g0"]  # -g0: Python's default -g only slows the build
    if not want_cuda():
        return CppExtension("cnbert._C", sources, define_macros=macros, extra_compile_args={"cxx": cxx_flags})
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    cuda_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
    macros.append(("CNBERT_WITH_CUDA", None))
    return CUDAExtension(
        "cnbert._C",
        sources + cuda_sources,
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension})
