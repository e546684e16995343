"""GPU check and benchmark of cnbert's fused kernels, in one run on one card (bench/README.md).

Sections, each reported even if another fails:
  env        card, torch, how the extension was built, which kernel image the card runs
  check      every CUDA op against its float64 reference (float32/float16/bfloat16), outputs
             allocated over NaN-poisoned memory so an unwritten element shows up;
             `--check-set paths` keeps one case per kernel path, for compute-sanitizer runs
  copy       device-to-device copy bandwidth, the ceiling the kernels are measured against
  softmax    ours vs softmax(x * scale + mask) eager vs torch.compile of it
  gelu       GELU and bias + GELU, ours vs F.gelu (x + b then F.gelu) vs torch.compile
  training   one BERT-base training step (batch 32, length 512, bf16 autocast): cnbert sdpa,
             cnbert fused, Hugging Face BertForQuestionAnswering (sdpa), with peak memory

Timings: CUDA events around each call, after warm-up, with the GPU held back by a sleep kernel so
that the CPU queues the calls ahead and the events time the GPU work alone; the median is
reported. GB/s counts the minimum bytes an op must move (each input read once, each output
written once). `--smoke` runs every section on the CPU at toy sizes, to check the script itself.
"""
from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

import cnbert.kernels as k
from cnbert.io_utils import write_json
from cnbert.kernels import reference
from cnbert.kernels.testing import TOLERANCE, mismatch

SOFTMAX_SHAPES = [(32, 12, 512, 512), (12, 16, 512, 512), (64, 12, 384, 384), (8, 12, 1024, 1024), (4, 12, 2048, 2048)]
GELU_SHAPES = [(16384, 3072), (6144, 4096)]
SMOKE_SOFTMAX_SHAPES = [(2, 2, 16, 16), (1, 2, 8, 40)]
SMOKE_GELU_SHAPES = [(64, 48)]
SCALE = 0.125
CHECK_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
APPROXIMATIONS = ("none", "tanh", "sigmoid")
CHECK_SK = (1, 7, 33, 64, 100, 256, 384, 500, 512, 1000, 1024, 1025, 2048, 3000, 4096, 8192, 9000, 16384)
MASK_KINDS = ("none", "bool_keys", "additive_keys_f32", "additive_keys_own", "bool_full", "additive_shared", "neg_inf_rows")
LAYOUTS = ("contiguous", "misaligned", "transposed")
# The check section's cases. "full" for the check proper; "paths" for runs under compute-sanitizer
# (10-100x slower), which look at memory accesses, not values: every Sk and alignment (so every
# kernel and launch branch), both pack widths (4- and 2-byte elements), every mask element type
# (none, bool, float32, the scores' dtype), every mask broadcast ([B,1,Sq,Sk], [B,1,1,Sk],
# [1,1,Sq,Sk]) and fully masked rows at every Sk (each kernel's early exit for them);
# transposed inputs are made contiguous before any kernel sees them.
CHECK_SETS = {
    "full": {"dtypes": CHECK_DTYPES, "approximations": APPROXIMATIONS, "masks": MASK_KINDS, "layouts": LAYOUTS},
    "paths": {"dtypes": (torch.float32, torch.bfloat16), "approximations": ("none",),
              "masks": ("none", "bool_full", "additive_keys_f32", "additive_keys_own", "additive_shared",
                        "neg_inf_rows"),
              "layouts": ("contiguous", "misaligned")},
}
TARGET_OF_COPY = 0.80


# ---------------------------------------------------------------------------------------------
# Timing


class Timer:
    def __init__(self, device: str, iters: int, warmup: int):
        self.device, self.iters, self.warmup = device, iters, warmup

    def median_ms(self, fn, iters: int | None = None) -> float:
        iters = iters or self.iters
        for _ in range(self.warmup):
            fn()
        if self.device != "cuda":
            times = []
            for _ in range(iters):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
            return statistics.median(times)
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        torch.cuda._sleep(50_000_000)  # ~25 ms of GPU time for the CPU to queue the calls
        for start, end in zip(starts, ends):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


# ---------------------------------------------------------------------------------------------
# Sections


def section_env(device: str) -> dict:
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension": k.extension_status(),
        "extension_loaded": k.is_available(),
        "cuda_kernels": k.cuda_available(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1))
        if k.is_available():
            from cnbert import _C

            info["kernel_image"] = _C.cuda_kernel_image(0) if k.cuda_available() else None
    return info


def poison(device: str, *sizes: int) -> None:
    """Fill freed blocks of the caching allocator with NaN bytes, two of each size in `sizes`; the
    next allocations of those sizes reuse them, so an element a kernel forgets to write reads as NaN.
    Two, because an op given a non-contiguous input first copies it to a block of the same size,
    which takes the first; its output then takes the second."""
    if device == "cuda":
        blocks = [torch.empty(n, dtype=torch.uint8, device=device).fill_(0xFF)
                  for n in sizes for _ in range(2) if n]
        del blocks  # freed together, after all are allocated


def _record(results: list, failures: list, what: str, problem: str) -> None:
    results.append({"case": what, "ok": not problem, "problem": problem})
    if problem:
        failures.append(f"{what}: {problem}")


def compare_gelu(x: torch.Tensor, grad: torch.Tensor, approximate: str, device: str) -> tuple[str, str]:
    """Problems ('' if none) of k.gelu's output and input gradient against float64."""
    x = x.detach().requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    poison(device, x.nbytes)
    y = k.gelu(x, approximate)
    poison(device, x.nbytes)
    (gx,) = torch.autograd.grad(y, x, grad)
    y64 = reference.gelu(x64, approximate)
    (gx64,) = torch.autograd.grad(y64, x64, grad.double())
    return mismatch(y, y64, x.dtype), mismatch(gx, gx64, x.dtype)


def compare_bias_gelu(x: torch.Tensor, bias: torch.Tensor, grad: torch.Tensor, approximate: str,
                      device: str) -> tuple[str, str, str]:
    """Problems of k.bias_gelu's output and its x and bias gradients against float64. The bias
    gradient sums a column of every row, so its tolerance grows with that sum."""
    x, bias = x.detach().requires_grad_(True), bias.detach().requires_grad_(True)
    x64, b64 = x.detach().double().requires_grad_(True), bias.detach().double().requires_grad_(True)
    poison(device, x.nbytes)
    y = k.bias_gelu(x, bias, approximate)
    poison(device, x.nbytes, bias.nbytes)
    gx, gb = torch.autograd.grad(y, (x, bias), grad)
    y64 = reference.bias_gelu(x64, b64, approximate)
    gx64, gb64 = torch.autograd.grad(y64, (x64, b64), grad.double())
    sum_scale = float(gx64.abs().reshape(-1, x.shape[-1]).sum(0).max())
    return (mismatch(y, y64, x.dtype), mismatch(gx, gx64, x.dtype),
            mismatch(gb, gb64, x.dtype, atol=sum_scale * 2e-6))


def softmax_backward_op(grad: torch.Tensor, output: torch.Tensor, scale: float) -> torch.Tensor:
    """The extension's softmax backward, which the op's autograd formula calls."""
    return torch.ops.cnbert.scaled_masked_softmax_backward(grad, output, scale)


def compare_softmax(scores: torch.Tensor, mask, grad: torch.Tensor, device: str) -> tuple[str, str, str]:
    """Problems of k.scaled_masked_softmax's output, its scores gradient end to end, and the
    backward op alone, against float64.

    End to end, a 16-bit gradient carries the rounding of y, which the backward reads, so its
    tolerance (eps * scale * max|g|) is loose next to gradients of order scale * y; the backward
    op alone is therefore also compared with the float64 formula evaluated at the op's own
    output, to a tolerance that only fp32 accumulation needs (as tests/test_kernels_softmax.py)."""
    x = scores.detach().requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    poison(device, x.nbytes)
    y = k.scaled_masked_softmax(x, mask, SCALE)
    poison(device, x.nbytes)
    (gx,) = torch.autograd.grad(y, x, grad)
    y64 = reference.scaled_masked_softmax(x64, mask, SCALE)
    (gx64,) = torch.autograd.grad(y64, x64, grad.double())
    g_scale = float(grad.abs().max()) if grad.numel() else 0.0
    y_own, g64 = y.detach().double(), grad.double()
    expected = SCALE * y_own * (g64 - (g64 * y_own).sum(-1, keepdim=True))
    poison(device, x.nbytes)
    backward_op = softmax_backward_op(grad, y.detach(), SCALE)
    return (mismatch(y, y64, x.dtype),
            mismatch(gx, gx64, x.dtype, atol=4 * TOLERANCE[x.dtype][0] * SCALE * g_scale),
            mismatch(backward_op, expected, x.dtype, atol=1e-6 * SCALE * g_scale))


def check_gelu_ops(device: str, results: list, failures: list, smoke: bool, cases: dict = CHECK_SETS["full"]) -> None:
    shapes = [(1,), (7,), (33, 1000), (8, 1003), (2048, 3072)] if not smoke else [(7,), (5, 33)]
    gen = torch.Generator(device="cpu").manual_seed(0)
    for dtype in cases["dtypes"]:
        for approximate in cases["approximations"]:
            for shape in shapes:
                for misaligned in (False, True):
                    n = math.prod(shape)
                    base = (torch.randn(n + 1, generator=gen) * 3).to(device=device, dtype=dtype)
                    x = (base[1:] if misaligned else base[:n]).view(shape)
                    bias = torch.randn(shape[-1], generator=gen).to(device=device, dtype=dtype)
                    grad = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
                    tag = f"{dtype} {approximate} {shape}{' misaligned' if misaligned else ''}"
                    values, grad_x = compare_gelu(x, grad, approximate, device)
                    _record(results, failures, f"gelu {tag}", values)
                    _record(results, failures, f"gelu grad {tag}", grad_x)
                    values, grad_x, grad_bias = compare_bias_gelu(x, bias, grad, approximate, device)
                    _record(results, failures, f"bias_gelu {tag}", values)
                    _record(results, failures, f"bias_gelu grad x {tag}", grad_x)
                    _record(results, failures, f"bias_gelu grad bias {tag}", grad_bias)


def make_mask(kind: str, b: int, sq: int, sk: int, dtype: torch.dtype, device: str, gen: torch.Generator):
    keep = torch.rand(b, 1, 1, sk, generator=gen) > 0.3
    keep[..., 0] = True
    if kind == "none":
        return None
    if kind == "bool_keys":
        mask = keep
    elif kind == "additive_keys_f32":
        mask = (1.0 - keep.float()) * -10000.0
    elif kind == "additive_keys_own":
        mask = ((1.0 - keep.float()) * -10000.0).to(dtype)
    elif kind == "bool_full":
        mask = torch.rand(b, 1, sq, sk, generator=gen) > 0.5
    elif kind == "additive_shared":
        mask = torch.randn(1, 1, sq, sk, generator=gen)
    else:  # -inf keys, with one batch entirely masked: its rows must come out as zeros
        mask = torch.zeros(b, 1, 1, sk).masked_fill(~keep, float("-inf"))
        mask[-1] = float("-inf")
    return mask.to(device)


def check_softmax_ops(device: str, results: list, failures: list, smoke: bool, cases: dict = CHECK_SETS["full"]) -> None:
    gen = torch.Generator(device="cpu").manual_seed(1)
    sks = CHECK_SK if not smoke else (1, 7, 33, 300)
    for dtype in cases["dtypes"]:
        for kind in cases["masks"]:
            for sk in sks:
                for layout in cases["layouts"]:
                    b, h, sq = 2, 2, 3
                    if layout == "misaligned":
                        flat = torch.randn(1 + b * h * sq * sk, generator=gen) * 4
                        scores = flat.to(device=device, dtype=dtype)[1:].view(b, h, sq, sk)  # 1 element off
                    elif layout == "transposed":
                        scores = (torch.randn(b, h, sk, sq, generator=gen) * 4).to(device=device, dtype=dtype).transpose(2, 3)
                    else:
                        scores = (torch.randn(b, h, sq, sk, generator=gen) * 4).to(device=device, dtype=dtype)
                    mask = make_mask(kind, b, sq, sk, dtype, device, gen)
                    grad = torch.randn(b, h, sq, sk, generator=gen).to(device=device, dtype=dtype)
                    tag = f"{dtype} {kind} Sk={sk} {layout}"
                    values, grad_scores, backward_op = compare_softmax(scores, mask, grad, device)
                    _record(results, failures, f"softmax {tag}", values)
                    _record(results, failures, f"softmax grad {tag}", grad_scores)
                    _record(results, failures, f"softmax backward op {tag}", backward_op)


def section_check(device: str, smoke: bool, check_set: str = "full") -> dict:
    if device == "cuda" and not k.cuda_available():
        raise RuntimeError(f"no CUDA kernels to check: {k.extension_status()}")
    results, failures = [], []
    check_gelu_ops(device, results, failures, smoke, CHECK_SETS[check_set])
    check_softmax_ops(device, results, failures, smoke, CHECK_SETS[check_set])
    print(f"  {len(results) - len(failures)} of {len(results)} checks passed")
    for failure in failures[:40]:
        print(f"  FAIL {failure}")
    return {"cases": len(results), "failures": failures}


def section_copy(device: str, timer: Timer, smoke: bool) -> dict:
    n = (1 << 30) if not smoke else (1 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    ms = timer.median_ms(lambda: dst.copy_(src))
    bw = gbps(2 * n, ms)
    print(f"  device-to-device copy of {n / 2**30:.2f} GiB: {ms:.3f} ms, {bw:.0f} GB/s (read + write)")
    return {"bytes": 2 * n, "ms": ms, "gbps": bw}


def _fwd_and_fwd_bwd(timer: Timer, fn, inputs: tuple, grad: torch.Tensor, wrt: tuple) -> tuple[float, float]:
    def forward():
        with torch.no_grad():
            fn(*inputs)

    def forward_backward():
        torch.autograd.grad(fn(*inputs), wrt, grad)

    return timer.median_ms(forward), timer.median_ms(forward_backward)


def _compiled(fn):
    torch._dynamo.reset()  # one fresh cache per shape: no recompile limits, no dynamic shapes
    return torch.compile(fn, dynamic=False)


class Budget:
    """Time left for new timed rows. bench/gpu_run.sh passes what is left of the machine's per-call
    limit, so that a slow run stops between rows, with its JSON written, instead of being killed."""

    def __init__(self, seconds: float | None):
        self.end = None if seconds is None else time.monotonic() + seconds

    def spent(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end


def timed_rows(rows: list, items: list, measure, describe, budget: Budget, save, device: str) -> bool:
    """Appends measure(item) to rows for each item, saving after each. An item that raises leaves a
    row with its traceback and the others still run, so one failure loses no other measurement.
    True if any row failed: an error, a wrong result ('check' other than 'ok') or no time left."""
    failed = False
    for item in items:
        if budget.spent():
            row = {**describe(item), "skipped": "time limit reached"}
            print(f"  {describe(item)}: skipped, time limit reached", flush=True)
        else:
            try:
                row = measure(item)
            except Exception:
                row = {**describe(item), "error": traceback.format_exc()}
                print(row["error"], file=sys.stderr, flush=True)
        failed |= row.get("check", "ok") != "ok" or "error" in row or row.get("skipped") == "time limit reached"
        rows.append(row)
        save()
        _free(device)
    return failed


def _problems(names: tuple, problems: tuple) -> str:
    """'ok', or each comparison that failed, by name."""
    return "; ".join(f"{name}: {problem}" for name, problem in zip(names, problems) if problem) or "ok"


def softmax_row(shape: tuple, device: str, timer: Timer, copy_gbps: float) -> dict:
    b, h, sq, sk = shape
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    x = torch.randn(shape, device=device, dtype=dtype).requires_grad_(True)
    keep = torch.ones(b, 1, 1, sk, dtype=torch.bool, device=device)
    keep[..., sk - sk // 8:] = False  # 1/8 of each row padded
    mask = ((1.0 - keep.to(dtype)) * -10000.0).to(dtype)  # the original list's additive mask
    grad = torch.randn_like(x)
    elem = x.numel() * x.element_size()
    fwd_bytes = 2 * elem + mask.numel() * mask.element_size()
    bwd_bytes = 3 * elem
    # At these sizes the grids are far larger than in the check section: check them here too.
    check = _problems(("fwd", "bwd", "bwd op"), compare_softmax(x, mask, grad, device))

    def chain(s, m):
        return torch.softmax(s * SCALE + m, dim=-1)

    def ours(s, m):
        return k.scaled_masked_softmax(s, m, SCALE)

    impls = {"cnbert": ours, "eager": chain, "compile": _compiled(chain)}
    timings = {}
    for name, fn in impls.items():
        fwd, both = _fwd_and_fwd_bwd(timer, fn, (x, mask), grad, (x,))
        timings[name] = {"fwd_ms": fwd, "fwd_bwd_ms": both, "bwd_ms": both - fwd}
    # Our backward kernel alone (needs only the output and its gradient).
    with torch.no_grad():
        out = ours(x, mask)
    timings["cnbert"]["bwd_op_ms"] = timer.median_ms(
        lambda: torch.ops.cnbert.scaled_masked_softmax_backward(grad, out, SCALE))
    for t in timings.values():
        t["fwd_gbps"] = gbps(fwd_bytes, t["fwd_ms"])
        t["bwd_gbps"] = gbps(bwd_bytes, t.get("bwd_op_ms", t["bwd_ms"]))
        t["fwd_of_copy"] = t["fwd_gbps"] / copy_gbps
        t["bwd_of_copy"] = t["bwd_gbps"] / copy_gbps
    ours_t, eager_t, comp_t = timings["cnbert"], timings["eager"], timings["compile"]
    # Backward is compared as fwd+bwd - fwd on every side: torch.compile fuses its backward into
    # one graph, which cannot be called alone.
    targets = {
        "fwd >= 80% copy": ours_t["fwd_of_copy"] >= TARGET_OF_COPY,
        "bwd >= 80% copy": ours_t["bwd_of_copy"] >= TARGET_OF_COPY,
        "fwd >= 2x eager": eager_t["fwd_ms"] >= 2 * ours_t["fwd_ms"],
        "bwd >= 2x eager": eager_t["bwd_ms"] >= 2 * ours_t["bwd_ms"],
        "fwd <= compile": ours_t["fwd_ms"] <= comp_t["fwd_ms"],
        "bwd <= compile": ours_t["bwd_ms"] <= comp_t["bwd_ms"],
    }
    # Full-size passes over memory (bench/README.md): eager is mul, add, softmax (6) forward and
    # _softmax_backward_data, mul (5) backward; ours 2 and 3. The speed-up over eager is capped there.
    bounds = {"fwd_vs_eager": 6 / 2, "bwd_vs_eager": 5 / 3}
    print(f"  softmax {shape} {dtype}: check {check}")
    for name, t in timings.items():
        print(f"    {name:8s} fwd {t['fwd_ms']:.3f} ms {t['fwd_gbps']:6.0f} GB/s ({t['fwd_of_copy']:.0%} of copy)"
              f" | bwd {t.get('bwd_op_ms', t['bwd_ms']):.3f} ms {t['bwd_gbps']:6.0f} GB/s ({t['bwd_of_copy']:.0%})"
              f" | fwd+bwd {t['fwd_bwd_ms']:.3f} ms")
    print("    targets: " + ", ".join(f"{key} {'MET' if ok else 'MISSED'}" for key, ok in targets.items()))
    print(f"    vs eager: fwd {eager_t['fwd_ms'] / ours_t['fwd_ms']:.2f}x (bytes allow {bounds['fwd_vs_eager']:.2f}x), "
          f"bwd {eager_t['bwd_ms'] / ours_t['bwd_ms']:.2f}x (bytes allow {bounds['bwd_vs_eager']:.2f}x)", flush=True)
    return {"shape": list(shape), "dtype": str(dtype), "fwd_bytes": fwd_bytes, "bwd_bytes": bwd_bytes,
            "check": check, "timings": timings, "targets": targets, "byte_bounds": bounds}


def _describe_softmax(shape: tuple) -> dict:
    return {"shape": list(shape)}


def _describe_gelu(item: tuple) -> dict:
    return {"op": item[1], "shape": list(item[0])}


def gelu_row(item: tuple, device: str, timer: Timer, copy_gbps: float) -> dict:
    shape, op = item
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    x = torch.randn(shape, device=device, dtype=dtype).requires_grad_(True)
    bias = torch.randn(shape[-1], device=device, dtype=dtype).requires_grad_(True)
    grad = torch.randn_like(x)
    elem = x.numel() * x.element_size()
    fwd_bytes, bwd_bytes = 2 * elem, 3 * elem

    def plain_bias_gelu(t, b):
        return F.gelu(t + b)

    if op == "gelu":
        impls = {"cnbert": lambda t: k.gelu(t), "eager": lambda t: F.gelu(t), "compile": _compiled(lambda t: F.gelu(t))}
        inputs, extra_fwd, extra_both = (x,), 0, 0
        check = _problems(("fwd", "bwd"), compare_gelu(x, grad, "none", device))
    else:
        impls = {"cnbert": lambda t, b: k.bias_gelu(t, b), "eager": plain_bias_gelu, "compile": _compiled(plain_bias_gelu)}
        inputs = (x, bias)
        bias_bytes = bias.numel() * bias.element_size()
        extra_fwd, extra_both = bias_bytes, 2 * bias_bytes  # bias read (fwd) and its gradient written (bwd)
        check = _problems(("fwd", "bwd x", "bwd bias"), compare_bias_gelu(x, bias, grad, "none", device))
    timings = {}
    for name, fn in impls.items():
        fwd, both = _fwd_and_fwd_bwd(timer, fn, inputs, grad, inputs)
        t = {"fwd_ms": fwd, "fwd_bwd_ms": both, "bwd_ms": both - fwd}
        t["fwd_gbps"] = gbps(fwd_bytes + extra_fwd, fwd)
        t["fwd_bwd_gbps"] = gbps(fwd_bytes + bwd_bytes + extra_both, both)
        t["fwd_of_copy"] = t["fwd_gbps"] / copy_gbps
        t["fwd_bwd_of_copy"] = t["fwd_bwd_gbps"] / copy_gbps
        timings[name] = t
    targets = {}
    if op == "bias_gelu":
        targets = {
            "fwd+bwd >= 80% copy": timings["cnbert"]["fwd_bwd_of_copy"] >= TARGET_OF_COPY,
            "fwd+bwd faster than x + b, F.gelu": timings["cnbert"]["fwd_bwd_ms"] < timings["eager"]["fwd_bwd_ms"],
        }
    print(f"  {op} {shape} {dtype}: check {check}")
    for name, t in timings.items():
        print(f"    {name:8s} fwd {t['fwd_ms']:.3f} ms {t['fwd_gbps']:6.0f} GB/s ({t['fwd_of_copy']:.0%} of copy)"
              f" | fwd+bwd {t['fwd_bwd_ms']:.3f} ms {t['fwd_bwd_gbps']:6.0f} GB/s ({t['fwd_bwd_of_copy']:.0%})")
    if targets:
        print("    targets: " + ", ".join(f"{key} {'MET' if ok else 'MISSED'}" for key, ok in targets.items()))
    return {"op": op, "shape": list(shape), "dtype": str(dtype), "check": check, "timings": timings, "targets": targets}


def _training_inputs(batch: int, length: int, vocab: int, device: str, gen: torch.Generator) -> dict:
    ids = torch.randint(1, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:, length - length // 8:] = 0  # 1/8 of each row padded, as in PERF.md
    ids = ids * mask
    types = (torch.arange(length) >= length // 4).long().expand(batch, length).contiguous()
    start = torch.randint(0, length - length // 8, (batch,), generator=gen)
    end = torch.clamp(start + torch.randint(0, 16, (batch,), generator=gen), max=length - length // 8 - 1)
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "start": start, "end": end}
    return {name: t.to(device) for name, t in tensors.items()}


def _time_training(model, step_loss, timer: Timer, device: str, steps: int) -> dict:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = step_loss()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ms = timer.median_ms(step, iters=steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"ms_per_step": ms, "peak_gib": peak}


def _cnbert_model(attention: str, sizes: dict, vocab: int, inputs: dict):
    """(name, model, loss function), or (name, reason it cannot run, None)."""
    name = "cnbert BertForSpanExtraction"
    try:
        from cnbert.config import ATTENTION_IMPLEMENTATIONS, BertConfig
        from cnbert.torch import BertForSpanExtraction, span_loss
    except ImportError as error:
        return name, f"cnbert.torch is not importable: {error}", None
    if attention not in ATTENTION_IMPLEMENTATIONS:
        return name, f"cnbert's model has no attention={attention!r} (has {', '.join(ATTENTION_IMPLEMENTATIONS)})", None
    torch.manual_seed(0)
    model = BertForSpanExtraction(BertConfig(vocab_size=vocab, attention=attention, **sizes))

    def loss():
        out = model(inputs["input_ids"], attention_mask=inputs["attention_mask"], token_type_ids=inputs["token_type_ids"])
        return span_loss(out, inputs["start"], inputs["end"])

    return name, model, loss


def _transformers_model(sizes: dict, vocab: int, inputs: dict):
    try:
        import transformers
    except ImportError as error:
        return "transformers BertForQuestionAnswering", f"transformers is not installed: {error}", None
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab, attn_implementation="sdpa", **sizes)
    model = transformers.BertForQuestionAnswering(config)

    def loss():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                     token_type_ids=inputs["token_type_ids"], start_positions=inputs["start"],
                     end_positions=inputs["end"]).loss

    return f"transformers BertForQuestionAnswering (transformers {transformers.__version__})", model, loss


TRAINING_MODELS = [("cnbert", "sdpa"), ("cnbert", "fused"), ("transformers", "sdpa")]


def section_training(device: str, timer: Timer, smoke: bool, rows: list, budget: Budget, save) -> bool:
    batch, length = (32, 512) if not smoke else (2, 32)
    sizes = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    if smoke:
        sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    vocab = 21128
    steps = 10 if not smoke else 2
    inputs = _training_inputs(batch, length, vocab, device, torch.Generator().manual_seed(0))

    def describe(item):
        library, attention = item
        return {"model": library, "attention": attention, "batch": batch, "length": length}

    def measure(item):
        library, attention = item
        row = describe(item)
        # Each model lives only inside this call, so the next one's peak memory does not count it.
        if library == "cnbert":
            name, model, loss = _cnbert_model(attention, sizes, vocab, inputs)
        else:
            name, model, loss = _transformers_model(sizes, vocab, inputs)
        row["model"] = name
        if loss is None:  # a model that cannot run is a failed row: its comparison is lost
            row["error"] = model
            print(f"  {name} ({attention}): cannot run: {model}", flush=True)
            return row
        params = sum(p.numel() for p in model.parameters())
        row.update(_time_training(model.to(device), loss, timer, device, steps))
        flops = 6 * params * batch * length + 12 * sizes["num_hidden_layers"] * batch * length**2 * sizes["hidden_size"]
        row["seq_per_s"] = batch / (row["ms_per_step"] * 1e-3)
        row["model_tflops"] = flops / (row["ms_per_step"] * 1e-3) / 1e12
        print(f"  {name} ({attention}): {row['ms_per_step']:.1f} ms/step, {row['seq_per_s']:.0f} seq/s, "
              f"{row['model_tflops']:.0f} model TFLOP/s, peak {row['peak_gib']:.2f} GiB", flush=True)
        return row

    return timed_rows(rows, TRAINING_MODELS, measure, describe, budget, save, device)


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _markdown_table(header: list, rows: list) -> list:
    return ["| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows]] + [""]


def _shape(row: dict) -> str:
    return "x".join(map(str, row["shape"]))


def summary_tables(results: dict) -> str:
    """Markdown tables of the timed sections, in PERF.md's style."""
    lines = []
    if results.get("copy"):
        lines += [f"copy: {results['copy']['gbps']:.0f} GB/s", ""]
    if results.get("softmax"):
        lines += _markdown_table(
            ["softmax shape", "impl", "fwd ms", "fwd GB/s", "fwd % copy", "bwd ms", "bwd GB/s", "bwd % copy", "fwd+bwd ms"],
            [[_shape(row), name, f"{t['fwd_ms']:.3f}", f"{t['fwd_gbps']:.0f}", f"{t['fwd_of_copy']:.0%}",
              f"{t.get('bwd_op_ms', t['bwd_ms']):.3f}", f"{t['bwd_gbps']:.0f}", f"{t['bwd_of_copy']:.0%}",
              f"{t['fwd_bwd_ms']:.3f}"]
             for row in results["softmax"] if "timings" in row for name, t in row["timings"].items()])
    if results.get("gelu"):
        lines += _markdown_table(
            ["op", "shape", "impl", "fwd ms", "fwd GB/s", "fwd % copy", "fwd+bwd ms", "fwd+bwd GB/s", "fwd+bwd % copy"],
            [[row["op"], _shape(row), name, f"{t['fwd_ms']:.3f}", f"{t['fwd_gbps']:.0f}", f"{t['fwd_of_copy']:.0%}",
              f"{t['fwd_bwd_ms']:.3f}", f"{t['fwd_bwd_gbps']:.0f}", f"{t['fwd_bwd_of_copy']:.0%}"]
             for row in results["gelu"] if "timings" in row for name, t in row["timings"].items()])
    if results.get("training"):
        cells = []
        for row in results["training"]:
            first = [row["model"], row["attention"], f"{row['batch']} x {row['length']}"]
            if "skipped" in row or "error" in row:
                why = f"skipped: {row['skipped']}" if "skipped" in row else "failed (see errors)"
                cells.append(first + [why, "", "", ""])
            else:
                cells.append(first + [f"{row['ms_per_step']:.1f}", f"{row['seq_per_s']:.0f}",
                                      f"{row['model_tflops']:.0f}", f"{row['peak_gib']:.2f}"])
        lines += _markdown_table(
            ["model", "attention", "batch x length", "ms/step", "seq/s", "model TFLOP/s", "peak GiB"], cells)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("gpu_kernels.json"), help="where to write the results")
    parser.add_argument("--sections", default="env,check,copy,softmax,gelu,training",
                        help="comma-separated subset of: env,check,copy,softmax,gelu,training")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per measurement (median)")
    parser.add_argument("--check-set", choices=sorted(CHECK_SETS), default="full",
                        help="the check section's cases: full, or paths (each kernel path once, for compute-sanitizer)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds after which no new timed row starts (the rest are reported as skipped)")
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes: checks the script, times nothing real")
    args = parser.parse_args(argv)

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or use --smoke to check the script on the CPU", file=sys.stderr)
        return 2
    timer = Timer(device, iters=args.iters if not args.smoke else 3, warmup=5 if not args.smoke else 1)
    budget = Budget(args.time_limit)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    results: dict = {"sections": wanted, "errors": {}}

    def save():
        write_json(args.json, results)

    def copy_gbps() -> float:
        if "copy" not in results:
            results["copy"] = section_copy(device, timer, args.smoke)
        return results["copy"]["gbps"]

    failed = False
    for section in wanted:
        print(f"== {section}", flush=True)
        start = time.perf_counter()
        try:
            if section == "env":
                results["env"] = section_env(device)
                for key, value in results["env"].items():
                    print(f"  {key}: {value}")
            elif section == "check":
                results["check"] = section_check(device, args.smoke, args.check_set)
                failed |= bool(results["check"]["failures"])
            elif section == "copy":
                copy_gbps()
            elif section in ("softmax", "gelu"):
                if device == "cuda" and not k.cuda_available():  # else "cnbert" would time the reference
                    raise RuntimeError(f"no CUDA kernels to time: {k.extension_status()}")
                bandwidth = copy_gbps()
                if section == "softmax":
                    items = SOFTMAX_SHAPES if not args.smoke else SMOKE_SOFTMAX_SHAPES
                    make_row, describe = softmax_row, _describe_softmax
                else:
                    items = [(shape, op) for shape in (GELU_SHAPES if not args.smoke else SMOKE_GELU_SHAPES)
                             for op in ("gelu", "bias_gelu")]
                    make_row, describe = gelu_row, _describe_gelu
                measure = partial(make_row, device=device, timer=timer, copy_gbps=bandwidth)
                results[section] = []
                failed |= timed_rows(results[section], items, measure, describe, budget, save, device)
            elif section == "training":
                results["training"] = []
                failed |= section_training(device, timer, args.smoke, results["training"], budget, save)
            else:
                raise ValueError(f"unknown section {section!r}")
        except Exception:  # report and go on to the next section; the exit status says it failed
            failed = True
            results["errors"][section] = traceback.format_exc()
            print(results["errors"][section], file=sys.stderr, flush=True)
        finally:
            print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
            save()
        try:
            _free(device)
        except Exception:  # after a kernel fault CUDA refuses even this; the next section says so too
            failed = True
            results["errors"][f"{section} (freeing memory)"] = traceback.format_exc()
            save()
    print("== summary")
    print(summary_tables(results))
    if results["errors"]:
        print(f"sections that failed: {', '.join(results['errors'])}")
    unfinished = [f"{section} {row.get('op', '')} {row['shape'] if 'shape' in row else row['model']}: "
                  f"{row.get('skipped') or row['error'].strip().splitlines()[-1]}"
                  for section in ("softmax", "gelu", "training") for row in results.get(section, [])
                  if "error" in row or row.get("skipped") == "time limit reached"]
    for line in unfinished:
        print(f"not measured: {line}")
    wrong = [f"{section} {row.get('op', '')} {row['shape']}: {row['check']}"
             for section in ("softmax", "gelu") for row in results.get(section, []) if row.get("check", "ok") != "ok"]
    for line in wrong:
        print(f"WRONG RESULT at a timed shape: {line}")
    print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
