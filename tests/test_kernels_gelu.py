"""gelu and bias_gelu kernels against float64 references: values, gradients, gradcheck, odd
shapes, strides, empty tensors and extreme inputs."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import cnbert.kernels as k
from cnbert.kernels import reference
from kernel_testing import DEVICES, DTYPES, as_float64, assert_close, needs_extension

pytestmark = needs_extension

APPROX = ["none", "tanh", "sigmoid"]


def check_gelu(x: torch.Tensor, approximate: str) -> None:
    dtype = x.dtype
    x = x.detach().requires_grad_(True)
    y = k.gelu(x, approximate)
    grad = torch.randn_like(y)
    y.backward(grad)
    x64 = as_float64(x)
    y64 = reference.gelu(x64, approximate)
    y64.backward(grad.double())
    assert_close(y, y64, dtype, what=f"gelu {approximate} value")
    assert_close(x.grad, x64.grad, dtype, what=f"gelu {approximate} grad")


def check_bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str) -> None:
    dtype = x.dtype
    x = x.detach().requires_grad_(True)
    bias = bias.detach().requires_grad_(True)
    y = k.bias_gelu(x, bias, approximate)
    grad = torch.randn_like(y)
    y.backward(grad)
    x64, b64 = as_float64(x), as_float64(bias)
    y64 = reference.bias_gelu(x64, b64, approximate)
    y64.backward(grad.double())
    assert_close(y, y64, dtype, what=f"bias_gelu {approximate} value")
    assert_close(x.grad, x64.grad, dtype, what=f"bias_gelu {approximate} grad x")
    # grad_bias is a column sum: allow float32 accumulation error relative to the summed magnitudes.
    rows = x.numel() // max(1, x.shape[-1])
    magnitude = float(x64.grad.abs().reshape(-1, x.shape[-1]).sum(0).max()) if x.numel() else 0.0
    assert_close(bias.grad, b64.grad, dtype, atol=magnitude * rows * 2e-7, what=f"bias_gelu {approximate} grad bias")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", APPROX)
def test_gelu_matches_float64_reference(device, dtype, approximate):
    # 3 * 1000 + 5 elements: exercises the vectorised body and a ragged tail.
    x = (torch.randn(3, 1005) * 3).to(device=device, dtype=dtype)
    check_gelu(x, approximate)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", APPROX)
def test_bias_gelu_matches_float64_reference(device, dtype, approximate):
    x = (torch.randn(2, 67, 96) * 2).to(device=device, dtype=dtype)
    bias = torch.randn(96).to(device=device, dtype=dtype)
    check_bias_gelu(x, bias, approximate)


@pytest.mark.parametrize("approximate", APPROX)
def test_gradcheck_float64(approximate):
    x = torch.randn(5, 13, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(13, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: k.gelu(t, approximate), (x,))
    assert torch.autograd.gradcheck(lambda t, b: k.bias_gelu(t, b, approximate), (x, bias))


def test_exact_gelu_is_the_default_and_the_variants_differ_as_documented():
    x = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    exact = k.gelu(x)
    assert torch.equal(exact, k.gelu(x, "none"))
    assert_close(exact, F.gelu(x), torch.float64, what="default is exact erf GELU")
    # REFERENCE.md: tanh is within 4.7e-4 of exact, sigmoid up to 2.0e-2 away.
    tanh_gap = float((k.gelu(x, "tanh") - exact).abs().max())
    sigmoid_gap = float((k.gelu(x, "sigmoid") - exact).abs().max())
    assert 4.0e-4 < tanh_gap < 4.8e-4
    assert 1.7e-2 < sigmoid_gap < 2.1e-2
    sigmoid_formula = x / (1 + torch.exp(-1.702 * x))
    assert_close(k.gelu(x, "sigmoid"), sigmoid_formula, torch.float64, what="x * sigmoid(1.702 x)")


@pytest.mark.parametrize("ops", [k, reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_magnitude_inputs_stay_finite(dtype, ops):
    # The reference too: it is the fallback, and the tanh form's x^3 overflows in F.gelu's backward.
    big = 6.0e4 if dtype == torch.float16 else 1.0e30
    x = torch.tensor([-big, -1e4, -100.0, 100.0, 1e4, big]).to(dtype)
    for approximate in APPROX:
        xg = x.clone().requires_grad_(True)
        y = ops.gelu(xg, approximate)
        y.backward(torch.ones_like(y))
        assert torch.isfinite(y).all() and torch.isfinite(xg.grad).all(), approximate
        # gelu(x) -> x for large positive x and -> 0 for large negative x; slopes -> 1 and 0.
        assert torch.equal(y[x > 0], x[x > 0]), approximate
        assert (y[x < 0].double().abs() < 1e-30).all(), approximate
        assert torch.equal(xg.grad[x > 0].double(), torch.ones(3, dtype=torch.float64)), approximate
        assert (xg.grad[x < 0].double().abs() < 1e-30).all(), approximate
    bias = torch.zeros(6, dtype=dtype, requires_grad=True)
    y = ops.bias_gelu(x.clone().requires_grad_(True), bias, "tanh")
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(bias.grad).all()


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    base = torch.randn(64, 48, device=device)
    x = base.t()[:, ::2]  # transposed and strided
    bias = torch.randn(96, device=device)[::3]
    assert not x.is_contiguous() and not bias.is_contiguous()
    check_gelu(x, "none")
    check_bias_gelu(x, bias, "tanh")
    # Storage offset breaks 16-byte alignment: the kernels must take their unaligned path.
    offset = torch.randn(1 + 40 * 24, device=device)[1:].view(40, 24)
    check_gelu(offset, "sigmoid")
    check_bias_gelu(offset, torch.randn(25, device=device)[1:], "none")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 7), (2, 0, 5)])
def test_empty_tensors(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    y = k.gelu(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    bias = torch.randn(shape[-1], device=device, requires_grad=True)
    x2 = torch.randn(shape, device=device, requires_grad=True)
    y2 = k.bias_gelu(x2, bias)
    y2.sum().backward()
    assert y2.shape == x2.shape
    assert torch.equal(bias.grad, torch.zeros_like(bias))


def test_bias_gradient_does_not_depend_on_thread_count():
    x = torch.randn(1000, 40, dtype=torch.float32)
    bias = torch.randn(40)
    grad = torch.randn(1000, 40)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(torch.ops.cnbert.bias_gelu_backward(grad, x, bias, "none"))
    finally:
        torch.set_num_threads(threads)
    for grad_x, grad_bias in results[1:]:
        assert torch.equal(grad_x, results[0][0]) and torch.equal(grad_bias, results[0][1])


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 40),
    columns=st.integers(1, 70),
    dtype=st.sampled_from(DTYPES),
    approximate=st.sampled_from(APPROX),
    scale=st.floats(0.1, 8.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_bias_gelu_property_shapes(rows, columns, dtype, approximate, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, columns, generator=generator) * scale).to(dtype)
    bias = torch.randn(columns, generator=generator).to(dtype)
    check_bias_gelu(x, bias, approximate)
    check_gelu(x, approximate)


def test_bias_of_another_dtype_is_cast_like_autocast():
    x = torch.randn(4, 8, dtype=torch.bfloat16, requires_grad=True)
    bias = torch.randn(8, dtype=torch.float32, requires_grad=True)
    y = k.bias_gelu(x, bias)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and bias.grad.dtype == torch.float32
    expected = reference.bias_gelu(x.detach().double(), bias.detach().bfloat16().double())
    assert_close(y, expected, torch.bfloat16, what="bias cast to x's dtype")


def test_bad_arguments_are_rejected_with_clear_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="approximate must be"):
        k.gelu(x, "fast")
    with pytest.raises(ValueError, match="bias must be 1-D"):
        k.bias_gelu(x, torch.randn(5))
    with pytest.raises(TypeError, match="float32, float64"):
        k.gelu(torch.arange(4))
    with pytest.raises(RuntimeError, match="approximate must be"):
        torch.ops.cnbert.gelu(x, "erf")
    with pytest.raises(RuntimeError, match="bias must be 1-D of size 4"):
        torch.ops.cnbert.bias_gelu(x, torch.randn(3), "none")


@pytest.mark.parametrize("approximate", APPROX)
def test_second_derivatives_match_float64(approximate):
    # A backward with create_graph=True (gradient penalties, Hessian-vector products) must give
    # gradients that can be differentiated again, not the backward kernel's constant result.
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(3, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: k.gelu(t, approximate), (x,))
    assert torch.autograd.gradgradcheck(lambda t, b: k.bias_gelu(t, b, approximate), (x, bias))
    # Only the bias requires grad: its second derivative still flows.
    frozen = x.detach()
    (grad_bias,) = torch.autograd.grad(k.bias_gelu(frozen, bias, approximate).pow(2).sum(), bias, create_graph=True)
    bias64 = bias.detach().requires_grad_(True)
    (want,) = torch.autograd.grad(reference.bias_gelu(frozen, bias64, approximate).pow(2).sum(), bias64, create_graph=True)
    second = torch.autograd.grad(grad_bias.sum(), bias)[0]
    assert_close(second, torch.autograd.grad(want.sum(), bias64)[0], torch.float64, what="d2/dbias2")


@pytest.mark.parametrize("ops", [k, reference], ids=["kernels", "reference"])
def test_bias_gelu_adds_in_float32_before_rounding(ops):
    # 1 + 2^-8 is no bfloat16: rounded first (to 1.0) the result is bf16(gelu(1)) = 0.83984375;
    # the exact sum gives bf16(gelu(1.00390625) = 0.84558) = 0.84375
    x = torch.tensor([1.0], dtype=torch.bfloat16)
    bias = torch.tensor([2.0 ** -8], dtype=torch.bfloat16)
    assert ops.bias_gelu(x, bias).item() == 0.84375


def test_float64_gelu_keeps_relative_precision_in_the_negative_tail():
    # x * erfc(-x / sqrt 2) / 2; the 1 + erf form (and F.gelu itself) gives 0 there
    xs = [-10.0, -20.0, -30.0]
    exact = torch.tensor([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in xs], dtype=torch.float64)
    torch.testing.assert_close(k.gelu(torch.tensor(xs, dtype=torch.float64)), exact, rtol=1e-12, atol=0)
