"""Pure-torch versions of the fused ops: the fallback when the compiled extension is absent, and
the oracle the tests compare the kernels with (called on float64 inputs there).

They compute in float32 for 16-bit inputs (float64 for float64) and return the input's dtype,
as the kernels do. Each is differentiable through ordinary autograd.
"""
import torch
import torch.nn.functional as F

APPROXIMATIONS = ("none", "tanh", "sigmoid")
SIGMOID_GELU_SLOPE = 1.702
GELU_SATURATION = 40.0


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU: exact erf form ("none"), tanh approximation, or x*sigmoid(1.702x) ("sigmoid")."""
    v = x.to(compute_dtype(x.dtype))
    # Beyond |x| = 40 every form equals max(x, 0) to well below float64 rounding, while the tanh
    # form's gradient overflows (x^3) to NaN there: use max(x, 0), as the kernels in effect do.
    # x = ±inf keeps F.gelu's results (gelu(-inf) is NaN), as the kernels do.
    saturated = (v.abs() > GELU_SATURATION) & v.isfinite()
    inner = v.masked_fill(saturated, 0.0)
    if approximate == "sigmoid":
        y = inner * torch.sigmoid(SIGMOID_GELU_SLOPE * inner)
    else:
        y = F.gelu(inner, approximate=approximate)
    return torch.where(saturated, v.clamp(min=0.0), y).to(x.dtype)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """gelu(x + bias), the sum taken in the compute dtype (not rounded to x's dtype first)."""
    dtype = compute_dtype(x.dtype)
    return gelu(x.to(dtype) + bias.to(dtype), approximate).to(x.dtype)


def scaled_masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """softmax(scores * scale + mask) over the last axis; a boolean mask keeps True positions.

    Rows whose logits are all -inf (every key masked) come out as zeros, with zero gradient.
    A row holding a NaN logit comes out NaN.
    """
    dtype = compute_dtype(scores.dtype)
    logits = scores.to(dtype) * scale
    if mask is not None:
        mask = _unbroadcast(mask)
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + _cast_mask(mask, _mask_dtype(mask.dtype, scores.dtype)).to(dtype)
    live = (logits != float("-inf")).any(dim=-1, keepdim=True)  # NaN counts as live; works for Sk = 0
    # Dead rows get finite logits before the softmax so that neither pass produces NaN.
    probs = torch.softmax(logits.masked_fill(~live, 0.0), dim=-1) * live
    return probs.to(scores.dtype)


def _unbroadcast(mask: torch.Tensor) -> torch.Tensor:
    """The mask with each stride-0 dimension of size > 1 (an expanded mask, such as
    mask.expand(B, 1, Sq, Sk) of a [B, 1, 1, Sk] one) narrowed to size 1: the same values under
    broadcasting, so the casts and negation below never copy the broadcast in memory."""
    for d in range(mask.dim()):
        if mask.shape[d] > 1 and mask.stride(d) == 0:
            mask = mask.narrow(d, 0, 1)
    return mask


def _cast_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive mask in `dtype`, a finite value beyond its range clamped to its largest finite
    magnitude rather than rounded to +-inf (so that it never masks a row fully); +-inf kept."""
    if torch.finfo(mask.dtype).max > torch.finfo(dtype).max:
        info = torch.finfo(dtype)
        mask = torch.where(mask.isinf(), mask, mask.clamp(info.min, info.max))
    return mask.to(dtype)


def _mask_dtype(mask_dtype: torch.dtype, scores_dtype: torch.dtype) -> torch.dtype:
    # The kernels read float32 masks and masks of the scores' dtype as they are, and other
    # floating masks after a cast to float32.
    return mask_dtype if mask_dtype in (torch.float32, scores_dtype) else torch.float32
