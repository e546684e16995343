"""Shared by the kernel tests: devices and dtypes to run on, and float64 oracle inputs. The
per-dtype tolerances live in cnbert.kernels.testing (bench/gpu_kernels.py uses them too)."""
import pytest
import torch

import cnbert.kernels as k
from cnbert.kernels.testing import TOLERANCE, assert_close

__all__ = ["DEVICES", "DTYPES", "TOLERANCE", "as_float64", "assert_close", "needs_cuda_kernels", "needs_extension"]

DEVICES = ["cpu"] + (["cuda"] if k.cuda_available() else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

needs_extension = pytest.mark.skipif(
    not k.is_available(), reason=f"extension not built: {k.extension_status()}"
)
needs_cuda_kernels = pytest.mark.skipif(
    not k.cuda_available(), reason=f"needs a GPU and CUDA kernels: {k.extension_status()}"
)


def as_float64(t: torch.Tensor) -> torch.Tensor:
    """A float64 leaf holding exactly t's (rounded) values: the oracle's input."""
    return t.detach().double().requires_grad_(True)
