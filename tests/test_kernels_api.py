"""The kernels as a library: the extension is built, the ops pass torch.library.opcheck, a model
using them compiles with fullgraph=True, and without the extension the reference ops take over."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import cnbert.kernels as k
from cnbert.kernels import reference
from kernel_testing import DEVICES, assert_close, needs_cuda_kernels, needs_extension


def test_extension_is_built():
    # `make` builds cnbert._C; without it every kernel test below would be skipped.
    assert k.is_available(), k.extension_status()
    assert "loaded" in k.extension_status()


def _opcheck_samples(device):
    g = torch.Generator().manual_seed(0)

    def rand(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype).requires_grad_(grad)

    keep = (torch.rand(2, 1, 1, 33, generator=g) > 0.3).to(device)
    yield torch.ops.cnbert.gelu.default, (rand(4, 33, grad=True), "none")
    yield torch.ops.cnbert.gelu.default, (rand(3, 8, dtype=torch.bfloat16, grad=True), "sigmoid")
    yield torch.ops.cnbert.gelu_backward.default, (rand(4, 33), rand(4, 33), "tanh")
    yield torch.ops.cnbert.bias_gelu.default, (rand(2, 5, 16, grad=True), rand(16, grad=True), "tanh")
    yield torch.ops.cnbert.bias_gelu.default, (rand(7, 16, dtype=torch.float16, grad=True), rand(16, dtype=torch.float16, grad=True), "none")
    yield torch.ops.cnbert.bias_gelu_backward.default, (rand(7, 16), rand(7, 16), rand(16), "sigmoid")
    yield torch.ops.cnbert.scaled_masked_softmax.default, (rand(2, 3, 4, 33, grad=True), keep, 0.125)
    yield torch.ops.cnbert.scaled_masked_softmax.default, (rand(2, 3, 4, 33, grad=True), None, 1.0)
    yield torch.ops.cnbert.scaled_masked_softmax.default, (rand(2, 3, 4, 33, grad=True).transpose(2, 3), rand(1, 1, 33, 4), 0.5)
    yield torch.ops.cnbert.scaled_masked_softmax.default, (rand(2, 3, 4, 33, dtype=torch.bfloat16, grad=True), keep, 0.125)
    yield torch.ops.cnbert.scaled_masked_softmax_backward.default, (rand(2, 3, 4, 33), rand(2, 3, 4, 33).softmax(-1), 0.3)


@needs_extension
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for op, args in _opcheck_samples(device):
        opcheck(op, args)


@needs_extension
def test_ops_are_used_for_cpu_tensors():
    x = torch.randn(3, 4, requires_grad=True)
    assert "cnbert_bias_gelu" in type(k.bias_gelu(x, torch.randn(4)).grad_fn).__name__
    assert "cnbert_scaled_masked_softmax" in type(k.scaled_masked_softmax(x.view(1, 1, 3, 4), None, 1.0).grad_fn).__name__


class TinyEncoderLayer(torch.nn.Module):
    """Attention probabilities and the FFN activation from cnbert.kernels; everything else plain."""

    def __init__(self, hidden=32, heads=4, ffn=64):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.out = torch.nn.Linear(hidden, hidden)
        self.up = torch.nn.Linear(hidden, ffn)
        self.down = torch.nn.Linear(ffn, hidden)

    def forward(self, x, keep):
        b, s, hidden = x.shape
        q, kk, v = self.qkv(x).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        probs = k.scaled_masked_softmax(q @ kk.transpose(-1, -2), keep[:, None, None, :], q.shape[-1] ** -0.5)
        x = x + self.out((probs @ v).transpose(1, 2).reshape(b, s, hidden))
        return x + self.down(k.gelu(k.bias_gelu(F.linear(x, self.up.weight), self.up.bias), "tanh"))


@needs_extension
@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_model_fullgraph_matches_eager(device):
    torch.manual_seed(0)
    model = TinyEncoderLayer().to(device)
    x = torch.randn(2, 6, 32, device=device)
    keep = torch.ones(2, 6, dtype=torch.bool, device=device)
    keep[1, 4:] = False

    def run(fn):
        model.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = fn(xi, keep)
        out.square().mean().backward()
        return out.detach(), xi.grad, [p.grad.clone() for p in model.parameters()]

    eager = run(model)
    torch._dynamo.reset()
    compiled = run(torch.compile(model, fullgraph=True))
    assert_close(compiled[0], eager[0].double(), torch.float32, atol=1e-5, what="compiled output")
    assert_close(compiled[1], eager[1].double(), torch.float32, atol=1e-5, what="compiled input grad")
    for got, want in zip(compiled[2], eager[2]):
        assert_close(got, want.double(), torch.float32, atol=1e-5, what="compiled parameter grad")


_WITHOUT_EXTENSION = textwrap.dedent(
    """
    import sys
    sys.modules["cnbert._C"] = None  # makes `from cnbert import _C` raise ImportError
    import torch, torch.nn.functional as F
    import cnbert.kernels as k
    assert not k.is_available() and not k.cuda_available()
    assert "could not be imported" in k.extension_status(), k.extension_status()
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(k.gelu(x), F.gelu(x))
    assert torch.autograd.gradcheck(lambda x, b: k.bias_gelu(x, b, "tanh"), (x, b))
    s = torch.randn(1, 2, 3, 6, dtype=torch.float64, requires_grad=True)
    keep = torch.tensor([True, True, False, True, False, False]).view(1, 1, 1, 6)
    p = k.scaled_masked_softmax(s, keep, 0.5)
    assert torch.allclose(p, torch.softmax((s * 0.5).masked_fill(~keep, float("-inf")), -1))
    dead = k.scaled_masked_softmax(s, torch.zeros(1, 1, 1, 6, dtype=torch.bool), 0.5)
    assert torch.equal(dead, torch.zeros_like(dead))
    dead.sum().backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
    # outputs are contiguous, as the kernels' are, for a transposed input too
    t = torch.randn(6, 4, dtype=torch.float64).t()
    assert k.gelu(t).is_contiguous() and k.bias_gelu(t, b).is_contiguous()
    assert k.scaled_masked_softmax(s.detach().transpose(2, 3), None, 0.5).is_contiguous()
    print("fallback ok")
    """
)


def _run_python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_import_without_extension_falls_back_to_reference():
    result = _run_python(_WITHOUT_EXTENSION, CNBERT_REQUIRE_KERNELS="0")
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout


def test_an_extension_built_against_another_torch_is_not_loaded():
    code = textwrap.dedent("""
        import sys, types, torch
        fake = types.ModuleType("cnbert._C")
        fake.build_info = lambda: {"torch_version": "1.0", "cuda": False}
        sys.modules["cnbert._C"] = fake
        import cnbert.kernels as k
        assert not k.is_available() and not k.runs_on(torch.zeros(1)), k.extension_status()
        assert "built against torch 1.0" in k.extension_status(), k.extension_status()
        print("refused")
        """)
    result = _run_python(code, CNBERT_REQUIRE_KERNELS="0")
    assert result.returncode == 0 and "refused" in result.stdout, result.stderr[-2000:]


def test_float64_runs_the_compiled_kernels_on_the_cpu_and_the_reference_on_cuda(monkeypatch):
    # float64 on the CPU is what the gradchecks test, so it must reach the kernels; CUDA kernels
    # take float32 and half types only
    from torch._subclasses.fake_tensor import FakeTensorMode

    from cnbert.kernels import _extension
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert k.runs_on(x)
    assert "cnbert" in type(k.bias_gelu(x, torch.randn(4, dtype=torch.float64)).grad_fn).__name__
    assert "cnbert" in type(k.scaled_masked_softmax(x.view(1, 1, 2, 4), None, 1.0).grad_fn).__name__
    monkeypatch.setitem(_extension.BUILD_INFO, "cuda", True)
    with FakeTensorMode():  # CUDA tensors without a GPU
        on_cuda_64, on_cuda_32 = torch.empty(2, dtype=torch.float64, device="cuda"), torch.empty(2, device="cuda")
    assert not k.runs_on(on_cuda_64) and k.runs_on(on_cuda_32)


def test_require_kernels_makes_a_missing_extension_an_error():
    code = 'import sys; sys.modules["cnbert._C"] = None; import cnbert.kernels'
    result = _run_python(code, CNBERT_REQUIRE_KERNELS="1")
    assert result.returncode != 0
    assert "CNBERT_REQUIRE_KERNELS=1" in result.stderr and "could not be imported" in result.stderr


@needs_cuda_kernels
def test_cuda_kernels_run_on_the_current_stream():
    # The side stream sleeps before it writes x: a kernel launched on the default stream instead
    # would read x before it is written, and rarely get the right answer by chance.
    x_ready = torch.randn(2, 3, 40, 512, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(512, device="cuda", dtype=torch.bfloat16)
    grad = torch.randn_like(x_ready)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        x = x_ready * 2
        probs = k.scaled_masked_softmax(x, None, 0.5)
        probs_grad = torch.ops.cnbert.scaled_masked_softmax_backward(grad, probs, 0.5)
        activation = k.bias_gelu(x, bias)
        grad_x, grad_bias = torch.ops.cnbert.bias_gelu_backward(grad, x, bias, "none")
    torch.cuda.synchronize()
    x64 = (x_ready * 2).double().requires_grad_(True)
    b64 = bias.double().requires_grad_(True)
    want_probs = reference.scaled_masked_softmax(x64, None, 0.5)
    assert_close(probs, want_probs, torch.bfloat16, what="softmax")
    (want_probs_grad,) = torch.autograd.grad(want_probs, x64, grad.double())
    assert_close(probs_grad, want_probs_grad, torch.bfloat16, atol=2e-2 * float(grad.abs().max()), what="softmax grad")
    want_activation = reference.bias_gelu(x64, b64)
    assert_close(activation, want_activation, torch.bfloat16, what="bias_gelu")
    want_grad_x, want_grad_bias = torch.autograd.grad(want_activation, (x64, b64), grad.double())
    assert_close(grad_x, want_grad_x, torch.bfloat16, what="bias_gelu grad x")
    assert_close(grad_bias, want_grad_bias, torch.bfloat16, atol=1e-5 * float(want_grad_x.abs().sum(0).max()),
                 what="bias_gelu grad bias")


@needs_cuda_kernels
def test_cuda_kernel_image_is_reported_for_the_device():
    from cnbert import _C

    major, minor = torch.cuda.get_device_capability(0)
    image = _C.cuda_kernel_image(0)
    # Machine code for this capability, or PTX for an older one that the driver compiled.
    assert 0 < image <= 10 * major + minor
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _C.cuda_kernel_image(torch.cuda.device_count())
