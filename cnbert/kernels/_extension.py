"""Loads the compiled extension `cnbert._C` (which defines torch.ops.cnbert.*) and registers, for
each op, a fake implementation (shapes for torch.compile / FakeTensor tracing) and its autograd
formula. Loading never raises: when the extension is missing or was built against another torch,
`LOADED` is False and `LOAD_ERROR` says why; cnbert.kernels then uses the reference ops.
Set CNBERT_REQUIRE_KERNELS=1 to make a failed load an error instead.
"""
import os

import torch

from . import reference

LOADED = False
LOAD_ERROR = ""
BUILD_INFO: dict = {}

try:
    from cnbert import _C
except ImportError as error:
    LOAD_ERROR = (
        f"the compiled extension cnbert._C could not be imported ({error}); build it with "
        "`pip install --no-build-isolation --no-deps -e .` (BUILD.md)"
    )
else:
    BUILD_INFO = dict(_C.build_info())
    running = ".".join(torch.__version__.split(".")[:2])
    if BUILD_INFO.get("torch_version") != running:
        LOAD_ERROR = (
            f"cnbert._C was built against torch {BUILD_INFO.get('torch_version')} but torch {running} "
            "is running; rebuild it (BUILD.md)"
        )
    else:
        LOADED = True

if not LOADED and os.environ.get("CNBERT_REQUIRE_KERNELS") == "1":
    raise ImportError(f"CNBERT_REQUIRE_KERNELS=1: {LOAD_ERROR}")


def _new_like(t: torch.Tensor) -> torch.Tensor:
    # The kernels return fresh contiguous tensors whatever the input's strides.
    return t.new_empty(t.shape)


def _register() -> None:
    lib = torch.library

    @lib.register_fake("cnbert::gelu")
    def _(x, approximate):
        return _new_like(x)

    @lib.register_fake("cnbert::gelu_backward")
    def _(grad, x, approximate):
        return _new_like(x)

    @lib.register_fake("cnbert::bias_gelu")
    def _(x, bias, approximate):
        return _new_like(x)

    @lib.register_fake("cnbert::bias_gelu_backward")
    def _(grad, x, bias, approximate):
        return _new_like(x), _new_like(bias)

    @lib.register_fake("cnbert::scaled_masked_softmax")
    def _(scores, mask, scale):
        return _new_like(scores)

    @lib.register_fake("cnbert::scaled_masked_softmax_backward")
    def _(grad, output, scale):
        return _new_like(output)

    # The backward kernels have no derivative of their own. A backward run with create_graph=True
    # (grad mode on inside it: gradient penalties, Hessian-vector products) therefore computes the
    # same gradients with the reference ops, so that they can be differentiated again. Under
    # torch.compile and in plain training grad mode is off there, and the kernels run.
    def gelu_setup(ctx, inputs, output):
        x, ctx.approximate = inputs
        ctx.save_for_backward(x)

    def gelu_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _differentiable_grads(reference.gelu, (x,), grad, ctx.approximate) + (None,)
        return torch.ops.cnbert.gelu_backward(grad, x, ctx.approximate), None

    lib.register_autograd("cnbert::gelu", gelu_backward, setup_context=gelu_setup)

    # x and bias are saved rather than x + bias: the backward recomputes the sum, which keeps
    # one activation-sized tensor less alive between the passes.
    def bias_gelu_setup(ctx, inputs, output):
        x, bias, ctx.approximate = inputs
        ctx.save_for_backward(x, bias)

    def bias_gelu_backward(ctx, grad):
        x, bias = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _differentiable_grads(reference.bias_gelu, (x, bias), grad, ctx.approximate) + (None,)
        grad_x, grad_bias = torch.ops.cnbert.bias_gelu_backward(grad, x, bias, ctx.approximate)
        return grad_x, grad_bias, None

    lib.register_autograd("cnbert::bias_gelu", bias_gelu_backward, setup_context=bias_gelu_setup)

    # Only the output is needed: d scores = scale * y * (g - sum(g * y)). The mask gets no gradient.
    def softmax_setup(ctx, inputs, output):
        _, _, ctx.scale = inputs
        ctx.save_for_backward(output)

    def softmax_backward(ctx, grad):
        (output,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            dtype = reference.compute_dtype(output.dtype)
            y, g = output.to(dtype), grad.to(dtype)
            return (ctx.scale * y * (g - (g * y).sum(-1, keepdim=True))).to(output.dtype), None, None
        return torch.ops.cnbert.scaled_masked_softmax_backward(grad, output, ctx.scale), None, None

    lib.register_autograd("cnbert::scaled_masked_softmax", softmax_backward, setup_context=softmax_setup)


def _differentiable_grads(reference_op, inputs: tuple, grad: torch.Tensor, approximate: str) -> tuple:
    """The gradients of reference_op(*inputs) for `grad`, as a graph that can be differentiated
    again with respect to the inputs (those that require grad) and to `grad`."""
    leaves = tuple(t if t.requires_grad else t.detach().requires_grad_(True) for t in inputs)
    return torch.autograd.grad(reference_op(*leaves, approximate), leaves, grad, create_graph=True)


if LOADED:
    _register()
