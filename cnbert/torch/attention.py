"""Scaled dot-product attention implementations, chosen by name (`BertConfig.attention`).

Every implementation has the same signature, so adding one is a function plus a registry entry:

    fn(query, key, value, key_padding_mask, *, dropout_p, scale) -> context

query, key, value: [batch, heads, seq, head_size]; key_padding_mask: bool [batch, seq], True for
real tokens and False for padding (or None: no padding); dropout_p is already 0.0 outside training.
Returns the context [batch, heads, seq, head_size] in the dtype of `value`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

AttentionFunction = Callable[..., torch.Tensor]


def eager_attention(query, key, value, key_padding_mask, *, dropout_p: float, scale: float) -> torch.Tensor:
    """Explicit matmul + softmax, the readable reference.

    Scores (their matmul too, outside autocast), mask and softmax are computed in float32 even
    under bf16/fp16 autocast (the original list's half-precision softmax is one of its defects),
    and in float64 for a float64 model. Scores rounded to bf16 before the softmax would err by up
    to 0.2 % of their size (half a bf16 step): 0.03 at a score of 16.
    Padded keys get the compute dtype's most negative value (as transformers does) rather than the
    original list's -10000·(1-mask): both give padded keys exactly zero probability here, but the
    dtype minimum stays correct whatever the score scale. A row whose keys are all padding gives
    zeros, as sdpa and fused do (transformers' eager path gives it uniform weights instead).
    """
    compute_dtype = torch.promote_types(query.dtype, torch.float32)
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.to(compute_dtype), key.to(compute_dtype).transpose(-1, -2)) * scale
    if key_padding_mask is not None:
        keep = key_padding_mask[:, None, None, :]
        scores = scores.masked_fill(~keep, torch.finfo(compute_dtype).min)
    probs = torch.softmax(scores, dim=-1)
    if key_padding_mask is not None:
        probs = probs.masked_fill(~keep.any(-1, keepdim=True), 0.0)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs.to(value.dtype), value)


def sdpa_attention(query, key, value, key_padding_mask, *, dropout_p: float, scale: float) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient kernels when they apply)."""
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def fused_attention(query, key, value, key_padding_mask, *, dropout_p: float, scale: float) -> torch.Tensor:
    """matmul + cnbert's fused scaled masked softmax (cnbert.kernels) + dropout + matmul.

    The kernel reads the [batch, 1, 1, seq] keep-mask in place and never materialises the masked
    scores; it accumulates in fp32 and returns probabilities in the scores' dtype, so under
    bf16/fp16 autocast the saved probabilities take half the memory of the eager path's fp32 ones.
    The scores themselves come out of the matmul in that dtype (their rounding is the price of the
    memory); the query is scaled before it, as sdpa does, so that fp16 scores overflow only where
    the scaled ones would.
    A row whose keys are all padding gives zeros, as in every attention implementation here (never
    the case with a [CLS] token).
    """
    from cnbert import kernels  # imported on first use: eager / sdpa models never load the extension

    scores = torch.matmul(query * scale, key.transpose(-1, -2))
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    probs = kernels.scaled_masked_softmax(scores, mask, 1.0)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs.to(value.dtype), value)


ATTENTION_FUNCTIONS: dict[str, AttentionFunction] = {
    "eager": eager_attention,
    "sdpa": sdpa_attention,
    "fused": fused_attention,
}


def attention_function(name: str) -> AttentionFunction:
    try:
        return ATTENTION_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown attention implementation {name!r}; available: "
                         f"{', '.join(ATTENTION_FUNCTIONS)}") from None
