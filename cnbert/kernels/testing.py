"""Tolerances for comparing a kernel's result with its float64 reference, shared by the tests and
bench/gpu_kernels.py."""
import torch

# (rtol, atol) for one rounding of a float32-accurate result to the dtype: half an ulp is 2^-24
# (float32), 2^-11 (float16) and 2^-9 (bfloat16) relative; rtol leaves about 2x for the float32 math.
TOLERANCE = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (8e-3, 1e-5),
}


def mismatch(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, atol: float = 0.0) -> str:
    """'' when |actual - expected| <= atol_dtype + atol + rtol_dtype * |expected| everywhere and
    actual has expected's shape, `dtype` and no NaN; otherwise what is wrong, worst element first."""
    if actual.shape != expected.shape:
        return f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if actual.dtype != dtype:
        return f"dtype {actual.dtype} != {dtype}"
    if actual.numel() == 0:
        return ""
    rtol, base_atol = TOLERANCE[dtype]
    a = actual.detach().double()
    e = expected.detach().double().to(a.device)
    nans = int(a.isnan().sum())
    if nans:
        return f"{nans} NaN of {a.numel()}"
    excess = (a - e).abs() - (base_atol + atol + rtol * e.abs())
    worst = int(excess.argmax())
    if float(excess.flatten()[worst]) <= 0:
        return ""
    got, want = float(a.flatten()[worst]), float(e.flatten()[worst])
    return f"off by {abs(got - want):.3g} at flat index {worst} (got {got:.6g}, want {want:.6g}, {dtype})"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, atol: float = 0.0,
                 what: str = "") -> None:
    problem = mismatch(actual, expected, dtype, atol)
    assert not problem, f"{what}: {problem}"
