"""scaled_masked_softmax kernels against float64 references: every mask kind and layout, odd and
large Sk, fully masked rows, extreme scores, strides, empty tensors, gradcheck."""
import math
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnbert.kernels as k
from cnbert.kernels import reference
from kernel_testing import DEVICES, DTYPES, TOLERANCE, as_float64, assert_close, needs_extension

pytestmark = needs_extension

MASK_KINDS = ["none", "bool_keys", "additive_keys", "additive_scores_dtype", "bool_full", "additive_shared", "neg_inf"]


def make_mask(kind: str, b: int, sq: int, sk: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor | None:
    """Masks as models build them. Each keeps at least one key per row except where noted."""
    keep_keys = torch.rand(b, 1, 1, sk, generator=generator) > 0.3
    keep_keys[..., 0] = True
    if kind == "none":
        return None
    if kind == "bool_keys":  # [B, 1, 1, Sk] key padding, True = attend
        return keep_keys
    if kind == "additive_keys":  # the original list's -10000 * (1 - mask), float32
        return (1.0 - keep_keys.float()) * -10000.0
    if kind == "additive_scores_dtype":
        return ((1.0 - keep_keys.float()) * -10000.0).to(dtype)
    if kind == "bool_full":  # [B, 1, Sq, Sk], e.g. causal plus padding
        return torch.rand(b, 1, sq, sk, generator=generator) > 0.5
    if kind == "additive_shared":  # [1, 1, Sq, Sk] float bias shared by the batch
        return torch.randn(1, 1, sq, sk, generator=generator)
    if kind == "neg_inf":  # additive -inf, HF-style but with true infinities
        return torch.zeros(b, 1, 1, sk).masked_fill(~keep_keys, float("-inf"))
    raise ValueError(kind)


def check_softmax(scores: torch.Tensor, mask: torch.Tensor | None, scale: float, what: str = "") -> None:
    """Value and gradient of the public op against the float64 reference, plus the backward op on
    its own against the float64 formula evaluated at the op's own (rounded) output."""
    dtype = scores.dtype
    x = scores.detach().requires_grad_(True)
    y = k.scaled_masked_softmax(x, mask, scale)
    grad = torch.randn_like(y)
    y.backward(grad)
    x64 = as_float64(x)
    y64 = reference.scaled_masked_softmax(x64, mask, scale)
    y64.backward(grad.double())
    assert_close(y, y64, dtype, what=f"{what} softmax value")
    # End to end the 16-bit gradient also carries the rounding of y (used by the backward):
    # |d grad| <~ eps * scale * y * max|g| per element.
    rtol, _ = TOLERANCE[dtype]
    g_scale = float(grad.abs().max()) if grad.numel() else 0.0
    assert_close(x.grad, x64.grad, dtype, atol=4 * rtol * abs(scale) * g_scale, what=f"{what} softmax grad")
    if scores.device.type == "cpu" or dtype != torch.float64:  # CUDA float64 runs the reference
        y_own = y.detach().double()
        g64 = grad.double()
        expected = scale * y_own * (g64 - (g64 * y_own).sum(-1, keepdim=True))
        got = torch.ops.cnbert.scaled_masked_softmax_backward(grad, y.detach(), scale)
        assert_close(got, expected, dtype, atol=1e-6 * abs(scale) * g_scale, what=f"{what} backward op")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_matches_float64_reference_for_every_mask_kind(device, dtype, kind):
    generator = torch.Generator().manual_seed(zlib.crc32(f"{kind} {dtype}".encode()))
    b, h, sq, sk = 2, 3, 5, 72
    scores = (torch.randn(b, h, sq, sk, generator=generator) * 4).to(device=device, dtype=dtype)
    mask = make_mask(kind, b, sq, sk, dtype, generator)
    check_softmax(scores, None if mask is None else mask.to(device), 0.125, what=kind)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sk", [1, 7, 31, 64, 100, 384, 500, 1000, 1025, 2048, 4096, 9000])
def test_row_lengths_including_odd_and_long(device, dtype, sk):
    # Covers each kernel family (warp, block, online) and unaligned Sk on CUDA (100: the unvectorised
    # warp kernel for 65 to 128 columns in 16-bit).
    generator = torch.Generator().manual_seed(sk)
    rows = max(1, 6000 // sk)
    scores = (torch.randn(2, 1, rows, sk, generator=generator) * 3).to(device=device, dtype=dtype)
    mask = make_mask("bool_keys", 2, rows, sk, dtype, generator).to(device)
    check_softmax(scores, mask, 1 / math.sqrt(64), what=f"Sk={sk}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows_are_zero_without_nan(device, dtype):
    b, h, sq, sk = 2, 2, 4, 40
    scores = torch.randn(b, h, sq, sk).to(device=device, dtype=dtype)
    keep = torch.rand(b, 1, sq, sk) > 0.4
    keep[0, 0, 1] = False  # one query row of batch 0 sees no key
    keep[1] = False  # batch 1 sees nothing at all
    keep[0, 0, 0] = True
    for mask in (keep, torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))):
        mask = mask.to(device)
        x = scores.detach().requires_grad_(True)
        y = k.scaled_masked_softmax(x, mask, 0.3)
        y.backward(torch.randn_like(y))
        assert not y.isnan().any() and not x.grad.isnan().any()
        assert torch.equal(y[1], torch.zeros_like(y[1])) and torch.equal(y[0, :, 1], torch.zeros_like(y[0, :, 1]))
        assert torch.equal(x.grad[1], torch.zeros_like(x.grad[1]))
        live = y[0, :, [0, 2, 3]].double().sum(-1)
        assert_close(live, torch.ones_like(live), torch.float64, atol=TOLERANCE[dtype][0] * sk, what="live rows sum to 1")
        check_softmax(scores, mask, 0.3, what="fully masked rows")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sk", [7, 64, 2048, 9000])
def test_rows_holding_nan_come_out_nan(device, dtype, sk):
    # A NaN logit is no masked key: its row is NaN, as from torch.softmax and the reference, so a
    # diverged run reaches the NaN-loss guard. A row whose only kept logit is NaN must not be taken
    # for a fully masked row and zeroed. Sk reaches every CUDA kernel family (warp with one element
    # per access, vectorised warp, block, online).
    nan = float("nan")
    scores = torch.randn(1, 1, 5, sk)
    scores[0, 0, 0, sk // 2] = nan  # among finite logits
    scores[0, 0, 1, sk - 1] = nan  # the only key the mask keeps in this row
    scores[0, 0, 2] = nan  # every logit
    scores[0, 0, 3, 0] = nan  # under a masked key: removed, the row stays finite
    keep = torch.ones(1, 1, 5, sk, dtype=torch.bool)
    keep[0, 0, 1, : sk - 1] = False
    keep[0, 0, 3, 0] = False
    x = scores.to(device=device, dtype=dtype).requires_grad_(True)
    mask = keep.to(device)
    y = k.scaled_masked_softmax(x, mask, 0.5)
    y.backward(torch.ones_like(y))
    assert y[0, 0, :3].isnan().all() and x.grad[0, 0, :3].isnan().all()
    assert torch.isfinite(y[0, 0, 3:]).all() and torch.isfinite(x.grad[0, 0, 3:]).all()
    assert_close(y[..., 3:, :], reference.scaled_masked_softmax(as_float64(x)[..., 3:, :], mask[..., 3:, :], 0.5),
                 dtype, what="finite rows beside NaN rows")


def test_the_reference_keeps_nan_rows_nan_too():
    # the fallback must not hide a diverged run either: a NaN row is no fully masked row
    nan = float("nan")
    scores = torch.tensor([[[[0.0, nan, 1.0], [nan, nan, nan], [1.0, 2.0, 3.0]]]], dtype=torch.float64)
    y = reference.scaled_masked_softmax(scores, None, 1.0)
    assert y[0, 0, :2].isnan().all()
    torch.testing.assert_close(y[0, 0, 2], torch.softmax(scores[0, 0, 2], -1))


@pytest.mark.parametrize("ops", [k, reference], ids=["kernels", "reference"])
def test_a_float64_mask_with_float64_scores_keeps_float64_precision(ops):
    # the kernels read a mask in float32 beside float32 / half scores only; a bias-like mask of
    # random values (not the usual 0 / -10000, which float32 holds exactly) shows the difference
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 2, 3, 5, generator=g, dtype=torch.float64)
    mask = torch.randn(1, 1, 3, 5, generator=g, dtype=torch.float64)
    want = torch.softmax(scores * 0.5 + mask, -1)
    torch.testing.assert_close(ops.scaled_masked_softmax(scores, mask, 0.5), want, atol=1e-13, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sk", [512, 1024, 4096])
def test_a_large_logit_among_many_equal_ones_keeps_float32_accuracy(device, sk):
    """Rows [0, -d, -d, ...] with exp(-d) near 1 / (Sk - 1): a running float32 sum of the Sk - 1 equal
    terms rounds the same way at every step, and drifted past the float32 tolerance by Sk = 512."""
    d = math.log(sk - 1) + 0.0005 * torch.arange(200, dtype=torch.float64)
    scores = (-d)[:, None].expand(200, sk).clone()
    scores[:, 0] = 0.0
    check_softmax(scores.reshape(1, 1, 200, sk).to(torch.float32).to(device), None, 1.0, what=f"Sk={sk}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ops", [k, reference], ids=["kernels", "reference"])
def test_a_float64_mask_beyond_float32s_range_stays_finite(device, dtype, ops):
    """The kernels read such a mask in float32: a finite value is clamped to float32's largest, not
    rounded to -inf (which would mask the row fully: zeros) or +inf (NaN); -inf still masks. (Next
    to a shift that large, float32 keeps nothing of the scores: equal ones show the row's fate.)"""
    scores = torch.zeros(1, 1, 4, 4, dtype=dtype, device=device)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    mask[..., 0, :] = torch.finfo(torch.float64).min  # every key: a uniform shift
    mask[..., 1, :] = -1e39
    mask[..., 2, 0] = 1e39  # key 0 dominates
    mask[..., 3, :] = float("-inf")  # every key masked
    y = ops.scaled_masked_softmax(scores, mask.to(device), 1.0).float().cpu()
    assert y[0, 0].tolist() == [[0.25] * 4, [0.25] * 4, [1.0, 0.0, 0.0, 0.0], [0.0] * 4]


def test_finite_additive_mask_never_masks_a_row_fully():
    # -10000 on every key shifts a row uniformly: softmax is unchanged, as in the unfused chain.
    scores = torch.randn(1, 1, 2, 8, dtype=torch.float64)
    mask = torch.full((1, 1, 1, 8), -10000.0, dtype=torch.float64)
    y = k.scaled_masked_softmax(scores, mask, 0.5)
    assert_close(y, torch.softmax(scores * 0.5 + mask, -1), torch.float64, what="uniform shift")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_magnitude_scores_do_not_overflow(device, dtype):
    big = 3.0e4 if dtype == torch.float16 else 1.0e30
    scores = torch.tensor([[[[big, -big, 0.0, big * 0.5], [-big, -big, -big, -big * 0.99], [1.0, 2.0, 3.0, 4.0]]]])
    scores = scores.to(device=device, dtype=dtype)
    x = scores.detach().requires_grad_(True)
    y = k.scaled_masked_softmax(x, None, 1.0)
    y.backward(torch.ones_like(y))
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    expected = torch.tensor([[[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]]], dtype=torch.float64)
    assert torch.equal(y[..., :2, :].double().cpu(), expected)
    check_softmax(scores, None, 1.0, what="large scores")


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_scores_and_masks(device):
    generator = torch.Generator().manual_seed(7)
    base = torch.randn(2, 3, 48, 40, generator=generator, device="cpu").to(device)
    scores = base.transpose(2, 3)  # [2, 3, 40, 48] with swapped strides
    assert not scores.is_contiguous()
    keep = (torch.rand(2, 1, 1, 96, generator=generator) > 0.3).to(device)[..., ::2]  # strided keys
    check_softmax(scores, keep, 0.2, what="transposed scores, strided mask")
    expanded = (torch.rand(2, 1, 1, 48, generator=generator) > 0.3).to(device).expand(2, 3, 40, 48)
    check_softmax(scores, expanded, 0.2, what="expanded mask (stride 0)")
    # An odd storage offset misaligns every row: CUDA must take the unaligned path.
    flat = torch.randn(1 + 2 * 2 * 6 * 64, generator=generator).to(device)
    offset = flat[1:].view(2, 2, 6, 64)
    check_softmax(offset, None, 1.0, what="unaligned scores")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 2, 3, 4), (2, 0, 3, 4), (2, 2, 0, 4), (2, 2, 3, 0)])
@pytest.mark.parametrize("ops", [k, reference], ids=["kernels", "reference"])
def test_empty_tensors(device, shape, ops):
    scores = torch.randn(shape, device=device, requires_grad=True)
    mask = torch.ones(shape[0], 1, 1, shape[3], dtype=torch.bool, device=device)
    y = ops.scaled_masked_softmax(scores, mask, 0.5)
    y.sum().backward()
    assert y.shape == scores.shape and scores.grad.shape == scores.shape


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_gradcheck_float64(kind):
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 2, 3, 9, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = make_mask(kind, 2, 3, 9, torch.float64, generator)
    if mask is not None and mask.dtype == torch.bool and mask.shape[2] == 3:
        mask[0, 0, 1] = False  # include a fully masked row
    assert torch.autograd.gradcheck(lambda s: k.scaled_masked_softmax(s, mask, 0.7), (scores,))


@pytest.mark.parametrize("kind", ["bool_keys", "additive_shared"])
def test_second_derivatives_match_float64(kind):
    # With create_graph=True the gradient is a graph in the output and the incoming gradient,
    # so it can be differentiated again (gradient penalties, Hessian-vector products).
    generator = torch.Generator().manual_seed(4)
    scores = torch.randn(2, 2, 3, 9, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = make_mask(kind, 2, 3, 9, torch.float64, generator)
    assert torch.autograd.gradgradcheck(lambda s: k.scaled_masked_softmax(s, mask, 0.7), (scores,))
    # gradgradcheck differentiates the graphed gradient against itself: it must also be the gradient
    y = k.scaled_masked_softmax(scores, mask, 0.7)
    upstream = torch.randn(y.shape, generator=generator, dtype=torch.float64)
    (plain,) = torch.autograd.grad(y, scores, upstream, retain_graph=True)
    (graphed,) = torch.autograd.grad(y, scores, upstream, create_graph=True)
    torch.testing.assert_close(graphed, plain, rtol=1e-12, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    sq=st.integers(1, 9),
    sk=st.integers(1, 300),
    dtype=st.sampled_from(DTYPES),
    kind=st.sampled_from(MASK_KINDS),
    scale=st.floats(0.01, 2.0),
    transpose=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_shapes(b, h, sq, sk, dtype, kind, scale, transpose, seed):
    generator = torch.Generator().manual_seed(seed)
    if transpose:
        scores = torch.randn(b, h, sk, sq, generator=generator).transpose(2, 3)
    else:
        scores = torch.randn(b, h, sq, sk, generator=generator)
    scores = (scores * 5).to(dtype)
    check_softmax(scores, make_mask(kind, b, sq, sk, dtype, generator), scale, what=f"{kind} {tuple(scores.shape)}")


def test_bad_arguments_are_rejected_with_clear_errors():
    scores = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="4-D"):
        k.scaled_masked_softmax(scores[0], None, 1.0)
    with pytest.raises(TypeError, match="attention_mask.bool"):
        k.scaled_masked_softmax(scores, torch.ones(2, 1, 1, 5, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="does not fit scores"):
        k.scaled_masked_softmax(scores, torch.ones(2, 1, 1, 4, dtype=torch.bool), 1.0)
    with pytest.raises(ValueError, match="does not fit scores"):
        k.scaled_masked_softmax(scores, torch.ones(3, 1, 1, 5, dtype=torch.bool), 1.0)
    with pytest.raises(ValueError, match="no gradient"):
        k.scaled_masked_softmax(scores, torch.zeros(2, 1, 1, 5, requires_grad=True), 1.0)
    with pytest.raises(RuntimeError, match="does not broadcast"):
        torch.ops.cnbert.scaled_masked_softmax(scores, torch.ones(2, 2, 1, 5, dtype=torch.bool), 1.0)
    with pytest.raises(RuntimeError, match="integer masks"):
        torch.ops.cnbert.scaled_masked_softmax(scores, torch.ones(2, 1, 1, 5, dtype=torch.int32), 1.0)


def _bytes_allocated(fn, device) -> tuple[int, torch.Tensor]:
    """Bytes fn() allocates on device (the sum of all its allocations on the CPU, measured with the
    profiler; the peak above the start on CUDA) and its result."""
    if device == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start, out
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    return sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages()), out


B, H, SQ, SK = 4, 2, 128, 128
_KEYS = torch.rand(B, 1, 1, SK, generator=torch.Generator().manual_seed(3)) > 0.3
_KEYS[..., 0] = True
BROADCAST_MASKS = {  # expanded (stride-0) masks whose dtype or last-axis stride the op must fix up
    "f64 keys expanded over Sq": lambda: _KEYS.double().sub(1).mul(1e4).expand(B, 1, SQ, SK),
    "f16 keys expanded over Sq": lambda: _KEYS.half().sub(1).mul(1e4).expand(B, 1, SQ, SK),
    "f64 [1,1,1,Sk] expanded over B, H, Sq": lambda: _KEYS[:1].double().sub(1).mul(1e4).expand(B, H, SQ, SK),
    "bool [B,1,1,1] expanded over Sq, Sk": lambda: _KEYS[..., :1].expand(B, 1, SQ, SK),
    "f64 [B,1,1,1] expanded over Sq, Sk": lambda: torch.randn(B, 1, 1, 1, dtype=torch.float64).expand(B, 1, SQ, SK),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(BROADCAST_MASKS))
def test_broadcast_masks_are_never_materialised(device, name):
    """A stride-0 mask is read through broadcasting even when its dtype must be converted (float64,
    or float16 with float32 scores) or its last axis has stride 0: besides the output the op
    allocates at most a few [B, 1, 1, Sk] rows, never the [B, 1, Sq, Sk] expansion."""
    mask = BROADCAST_MASKS[name]().to(device)
    scores = torch.randn(B, H, SQ, SK, generator=torch.Generator().manual_seed(5)).to(device)
    k.scaled_masked_softmax(scores, mask, 0.1)  # warm-up (first-call allocations)
    used, out = _bytes_allocated(lambda: k.scaled_masked_softmax(scores, mask, 0.1), device)
    extra = used - out.numel() * out.element_size()
    expanded_bool_bytes = B * SQ * SK  # the smallest full expansion of the mask: bool
    assert extra <= expanded_bool_bytes // 8, f"{name}: {extra} bytes besides the output"
    want = reference.scaled_masked_softmax(scores.double(), mask.contiguous(), 0.1)
    assert_close(out, want, torch.float32, what=name)


@pytest.mark.parametrize("name", list(BROADCAST_MASKS))
def test_reference_does_not_materialise_broadcast_masks(name):
    """The pure-torch fallback allocates no more for an expanded mask than for its compact form."""
    expanded = BROADCAST_MASKS[name]()
    compact = expanded[tuple(slice(0, 1) if s == 0 else slice(None) for s in expanded.stride())].clone()
    scores = torch.randn(B, H, SQ, SK, generator=torch.Generator().manual_seed(5))
    used_expanded, got = _bytes_allocated(lambda: reference.scaled_masked_softmax(scores, expanded, 0.1), "cpu")
    used_compact, want = _bytes_allocated(lambda: reference.scaled_masked_softmax(scores, compact, 0.1), "cpu")
    assert used_expanded <= used_compact + 4 * B * SK * 8, name
    torch.testing.assert_close(got, want, atol=0, rtol=0)
