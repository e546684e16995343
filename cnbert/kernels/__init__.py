"""Fused kernels for BERT: GELU, bias + GELU, and scaled masked softmax.

    import cnbert.kernels as k
    y = k.bias_gelu(F.linear(x, w), b)                  # gelu(x @ w.T + b), exact erf GELU
    probs = k.scaled_masked_softmax(scores, keep_mask, 1 / math.sqrt(head_dim))

The compiled extension cnbert._C provides CPU and (when built with CUDA) CUDA kernels, registered
as torch.ops.cnbert.* with fake implementations and autograd, so torch.compile(fullgraph=True)
traces through them. Importing this package never fails for want of the extension: the pure-torch
reference ops (cnbert.kernels.reference) take over, and `is_available()` says which is in use.
`runs_on(tensor)` says whether the compiled kernels run for that tensor's device and dtype (False
without the extension, or for a CUDA tensor when the extension was built without CUDA kernels).

Second derivatives work: a backward run with create_graph=True computes the gradients with the
reference formulas, which autograd can differentiate again; ordinary training runs the kernels.
"""
from . import reference
from .functional import (
    bias_gelu,
    cuda_available,
    extension_status,
    gelu,
    is_available,
    runs_on,
    scaled_masked_softmax,
)

__all__ = [
    "bias_gelu",
    "cuda_available",
    "extension_status",
    "gelu",
    "is_available",
    "reference",
    "runs_on",
    "scaled_masked_softmax",
]
