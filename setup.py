"""Builds cnbert and its C++/CUDA extension `cnbert._C`. Metadata and pinned dependencies live in
pyproject.toml; BUILD.md explains the options below.

The extension is compiled against the torch that is already installed, so build without isolation:
    pip install --no-build-isolation --no-deps -e .

Environment:
    CNBERT_CUDA=auto|1|0   auto (default): CUDA kernels when torch has CUDA and nvcc is found;
                           1: CUDA kernels or fail; 0: CPU kernels only.
    TORCH_CUDA_ARCH_LIST   GPU architectures to compile for (default "8.0;9.0+PTX").
    MAX_JOBS               parallel compile jobs (ninja).
"""
import os
import sys
from pathlib import Path

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

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
    if CUDA_HOME is None:
        reasons.append("no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)")
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
