"""The fused ops as differentiable torch functions.

Each runs the compiled kernels (torch.ops.cnbert.*) when the extension is loaded and has kernels
for the tensor's device and dtype (CPU: float32/float64/float16/bfloat16; CUDA: float32/float16/
bfloat16), and the pure-torch reference otherwise, with the same results up to rounding. Both
paths trace under torch.compile(fullgraph=True) without graph breaks. Outputs are contiguous;
non-contiguous inputs are copied to contiguous memory first.
"""
import torch

from . import _extension, reference
from .reference import APPROXIMATIONS

_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_DTYPES = _CUDA_DTYPES + (torch.float64,)


def is_available() -> bool:
    """True when the compiled extension cnbert._C loaded (its CPU kernels are then usable)."""
    return _extension.LOADED


def cuda_available() -> bool:
    """True when the extension loaded with CUDA kernels and torch sees a GPU."""
    return _extension.LOADED and bool(_extension.BUILD_INFO.get("cuda")) and torch.cuda.is_available()


def extension_status() -> str:
    """One line: what loaded, or why the reference ops are in use."""
    if not _extension.LOADED:
        return f"reference ops in use: {_extension.LOAD_ERROR}"
    kind = "CPU and CUDA" if _extension.BUILD_INFO.get("cuda") else "CPU"
    return f"cnbert._C loaded with {kind} kernels (built against torch {_extension.BUILD_INFO['torch_version']})"


def runs_on(t: torch.Tensor) -> bool:
    """True when the compiled kernels run for a tensor like `t` (its device and dtype): the
    extension loaded, and has kernels for that device (CPU always; CUDA when built with CUDA) and
    dtype. When False, the ops here run the pure-torch reference, which is correct but keeps more
    activations for backward than the unfused torch chain: callers choosing between a fused op and
    their own eager code (cnbert.torch's attention="fused" FFN) take the fused op only when this
    is True. Reads only the tensor's metadata and import-time constants, so
    torch.compile(fullgraph=True) traces it without a graph break."""
    if not _extension.LOADED or t.dtype not in _DTYPES:
        return False
    if t.device.type == "cpu":
        return True
    return t.device.type == "cuda" and bool(_extension.BUILD_INFO.get("cuda")) and t.dtype in _CUDA_DTYPES


def _check_floating(name: str, t: torch.Tensor) -> None:
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


def _check_approximate(approximate: str) -> None:
    if approximate not in APPROXIMATIONS:
        raise ValueError(
            f"approximate must be 'none' (exact erf GELU, BERT's `gelu`), 'tanh', or 'sigmoid' "
            f"(x*sigmoid(1.702x), blocksparse's fast_gelu), got {approximate!r}"
        )


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU. approximate="none" (default) is the exact erf form that BERT's `gelu` means;
    "tanh" is the tanh approximation (within 4.7e-4 of exact); "sigmoid" is x*sigmoid(1.702x),
    openai/blocksparse's `fast_gelu` (up to 2e-2 away from exact), used only when asked for."""
    _check_approximate(approximate)
    _check_floating("x", x)
    if runs_on(x):
        return torch.ops.cnbert.gelu(x, approximate)
    return reference.gelu(x, approximate).contiguous()  # element-wise torch keeps x's strides


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """gelu(x + bias) in one pass, bias [N] broadcast over x [..., N] (the FFN's first activation:
    pair it with F.linear(x, weight) without its bias). Gradients flow to x and bias. A bias of
    another dtype is cast to x's dtype first, as autocast does for a linear layer's bias."""
    _check_approximate(approximate)
    _check_floating("x", x)
    _check_floating("bias", bias)
    if x.dim() < 1 or bias.dim() != 1 or bias.shape[0] != x.shape[-1]:
        raise ValueError(f"bias must be 1-D of size x.shape[-1]; got x {tuple(x.shape)}, bias {tuple(bias.shape)}")
    if bias.device != x.device:
        raise ValueError(f"x is on {x.device} but bias is on {bias.device}")
    bias = bias.to(x.dtype)
    if runs_on(x):
        return torch.ops.cnbert.bias_gelu(x, bias, approximate)
    return reference.bias_gelu(x, bias, approximate).contiguous()


def scaled_masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """softmax(scores * scale + mask) over the last axis, in one pass.

    scores: [B, H, Sq, Sk], float32/float64/float16/bfloat16 (computed in float32, or float64; the
    CPU kernels sum each row in float64, so that a row of many equal logits keeps float32 accuracy).
    mask: None; a boolean keep-mask (True = attend, as in scaled_dot_product_attention); or an
    additive floating mask (e.g. -10000 * (1 - attention_mask), or -inf). Shape [B, 1, 1, Sk]
    (key padding), [B or 1, 1, Sq, Sk], or any 4-D shape that broadcasts to scores with a full
    last axis; it is read through broadcasting, never expanded in memory.
    Fully masked rows (every logit -inf, e.g. a boolean mask with no True in the row) give all
    zeros instead of NaN, with zero gradient. A finite additive mask such as -10000 never masks a
    row fully: such a row is the ordinary softmax of its (equal) logits, as in the unfused chain.
    A mask is read in the scores' dtype or float32; a finite float64 value beyond float32's range
    is read as float32's largest finite magnitude (not as +-inf), so this holds for it too.
    A row holding a NaN logit (one the mask does not remove) comes out NaN, as from torch.softmax.
    The backward pass needs only the output; the mask receives no gradient.
    """
    _check_floating("scores", scores)
    if scores.dim() != 4:
        raise ValueError(f"scores must be 4-D [B, H, Sq, Sk], got shape {tuple(scores.shape)}")
    if mask is not None:
        _check_mask(scores, mask)
    if runs_on(scores):
        return torch.ops.cnbert.scaled_masked_softmax(scores, mask, float(scale))
    return reference.scaled_masked_softmax(scores, mask, float(scale))


def _check_mask(scores: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TypeError(
            f"mask must be bool (True = attend) or an additive floating mask, got {mask.dtype}; "
            "convert a 0/1 attention_mask with attention_mask.bool()"
        )
    if mask.requires_grad:
        raise ValueError("mask requires grad, but scaled_masked_softmax gives the mask no gradient")
    if mask.device != scores.device:
        raise ValueError(f"scores are on {scores.device} but mask is on {mask.device}")
    broadcasts = mask.dim() == 4 and mask.shape[-1] == scores.shape[-1] and all(
        m in (1, s) for m, s in zip(mask.shape[:3], scores.shape[:3])
    )
    if not broadcasts:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not fit scores {tuple(scores.shape)}: expected "
            "[B, 1, 1, Sk] or [B or 1, 1, Sq, Sk] (4-D, each leading size 1 or equal, last equal to Sk)"
        )
