"""Shared by the kernel tests: devices and dtypes to run on, and the per-dtype tolerances for
comparing an op's result with its float64 reference."""
import pytest
import torch

import cnbert.kernels as k

DEVICES = ["cpu"] + (["cuda"] if k.cuda_available() else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# (rtol, atol) for one rounding of a float32-accurate result to the dtype: half an ulp is 2^-24
# (float32), 2^-11 (float16), 2^-9 (bfloat16) relative; rtol leaves 2x for the float32 math.
TOLERANCE = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (8e-3, 1e-5),
}

needs_extension = pytest.mark.skipif(
    not k.is_available(), reason=f"extension not built: {k.extension_status()}"
)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, atol: float = 0.0,
                 what: str = "") -> None:
    """|actual - expected| <= atol_dtype + atol + rtol_dtype * |expected|, with expected in float64."""
    rtol, base_atol = TOLERANCE[dtype]
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    assert not a.isnan().any(), f"{what}: NaN in result"
    bound = base_atol + atol + rtol * e.abs()
    excess = (a - e).abs() - bound
    worst = int(excess.argmax()) if excess.numel() else 0
    assert excess.numel() == 0 or excess.max() <= 0, (
        f"{what}: off by {float((a - e).abs().flatten()[worst]):.3g} at flat index {worst} "
        f"(got {float(a.flatten()[worst]):.6g}, want {float(e.flatten()[worst]):.6g}, dtype {dtype})"
    )


def leaf(t: torch.Tensor, dtype: torch.dtype, device: str) -> torch.Tensor:
    return t.to(device=device, dtype=dtype).detach().requires_grad_(True)


def as_float64(t: torch.Tensor) -> torch.Tensor:
    """A float64 leaf holding exactly t's (rounded) values: the oracle's input."""
    return t.detach().double().requires_grad_(True)
