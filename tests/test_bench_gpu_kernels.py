"""bench/gpu_kernels.py is run on a GPU machine once, in a short lease: these tests keep it working
between those runs. They run its --smoke mode (every section, on the CPU, at toy sizes) and show
that its check section catches a kernel that is wrong."""
import gc
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnbert.kernels as k
from kernel_testing import needs_extension

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_extension
def test_smoke_run_covers_every_section(tmp_path):
    out = tmp_path / "gpu_kernels.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["errors"] == {}
    assert results["env"]["extension_loaded"] is True
    # 3 dtypes x 3 GELU forms x 2 shapes x 2 alignments x 5 comparisons, plus
    # 3 dtypes x 7 mask kinds x 4 Sk x 3 layouts x 3 comparisons.
    assert results["check"] == {"cases": 180 + 756, "failures": []}
    assert [row["shape"] for row in results["softmax"]] == [[2, 2, 16, 16], [1, 2, 8, 40]]
    assert all(row["check"] == "ok" for row in results["softmax"] + results["gelu"])
    assert [row["op"] for row in results["gelu"]] == ["gelu", "bias_gelu"]
    for row in results["softmax"]:
        assert set(row["timings"]) == {"cnbert", "eager", "compile"}
        assert row["timings"]["cnbert"]["bwd_op_ms"] > 0
        assert len(row["targets"]) == 6
        assert row["byte_bounds"] == {"fwd_vs_eager": 3.0, "bwd_vs_eager": 5 / 3}
    attentions = [(row["model"].split()[0], row["attention"]) for row in results["training"]]
    assert attentions == [("cnbert", "sdpa"), ("cnbert", "fused"), ("transformers", "sdpa")]
    assert all(row["ms_per_step"] > 0 for row in results["training"])
    assert "bytes allow 1.67x" in run.stdout
    assert "| softmax shape | impl |" in run.stdout and "| model | attention |" in run.stdout


WITHOUT_TASK_PACKAGES = """
import runpy, sys
class Absent:  # the GPU machine has torch and transformers, not OpenCC or NLTK
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("opencc", "nltk"):
            raise ImportError(f"No module named {name!r} (absent on the GPU machine)")
sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@needs_extension
def test_training_rows_run_without_the_task_packages(tmp_path):
    """cnbert's models import without OpenCC and NLTK (only DRCD conversion and CMRC scoring need
    them), so the benchmark times them there; a model that cannot run fails the run."""
    out = tmp_path / "gpu_kernels.json"
    run = subprocess.run([sys.executable, "-c", WITHOUT_TASK_PACKAGES, str(SCRIPT), "--smoke", "--sections",
                          "training", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads(out.read_text())["training"]
    assert [row["model"].split()[0] for row in rows] == ["cnbert", "cnbert", "transformers"]
    assert all(row["ms_per_step"] > 0 and "error" not in row for row in rows)


@needs_extension
def test_paths_check_set_keeps_each_kernel_path_in_fewer_cases(tmp_path):
    # The cases compute-sanitizer reruns (bench/gpu_run.sh): 2 dtypes x 1 GELU form x 2 shapes x
    # 2 alignments x 5 comparisons, plus 2 dtypes x 6 mask kinds x 4 Sk x 2 layouts x 3 comparisons.
    out = tmp_path / "check.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--sections", "check", "--check-set", "paths",
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert json.loads(out.read_text())["check"] == {"cases": 40 + 288, "failures": []}


@needs_extension
@needs_extension
def test_check_section_reports_a_wrong_softmax(bench, monkeypatch):
    right = k.scaled_masked_softmax

    def off_by_a_little(scores, mask, scale):  # 5 % too large, for Sk = 300 only
        y = right(scores, mask, scale)
        return y * 1.05 if scores.shape[-1] == 300 else y

    monkeypatch.setattr(k, "scaled_masked_softmax", off_by_a_little)
    results, failures = [], []
    bench.check_softmax_ops("cpu", results, failures, smoke=True)
    # 3 dtypes x 7 masks x 4 Sk x 3 layouts, each checked for value, gradient and backward op
    assert len(results) == 756
    assert failures and all("Sk=300" in f for f in failures)
    for dtype in ("float32", "float16", "bfloat16"):
        assert any(f.startswith(f"softmax torch.{dtype} ") for f in failures), dtype


@needs_extension
def test_check_section_reports_a_16_bit_softmax_backward_without_its_sum_term(bench, monkeypatch):
    # scale * y * g instead of scale * y * (g - sum(g * y)): about 5 % off. End to end, the
    # 16-bit tolerance must allow for y's rounding and lets this through; the backward op's own
    # comparison (at the op's own output) must not.
    right = bench.softmax_backward_op

    def without_sum_term(grad, output, scale):
        wrong = (scale * output.float() * grad.float()).to(output.dtype)
        return wrong if output.dtype != torch.float32 else right(grad, output, scale)

    monkeypatch.setattr(bench, "softmax_backward_op", without_sum_term)
    results, failures = [], []
    bench.check_softmax_ops("cpu", results, failures, smoke=True)
    flagged = {f.split(":")[0] for f in failures}
    assert all(f.startswith("softmax backward op torch.") for f in flagged)
    for dtype in ("float16", "bfloat16"):
        cases = [r["case"] for r in results if r["case"].startswith(f"softmax backward op torch.{dtype} ")
                 and "Sk=1 " not in r["case"] and "neg_inf_rows" not in r["case"]]
        assert cases and all(case in flagged for case in cases), dtype


def _wrong_bias_gelu():
    """k.bias_gelu with a bias gradient 10 % off."""
    right = k.bias_gelu

    class WrongBiasGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, bias, approximate):
            ctx.save_for_backward(x, bias)
            ctx.approximate = approximate
            return right(x, bias, approximate)

        @staticmethod
        def backward(ctx, grad):
            x, bias = ctx.saved_tensors
            with torch.enable_grad():
                x_, bias_ = x.detach().requires_grad_(True), bias.detach().requires_grad_(True)
                grad_x, grad_bias = torch.autograd.grad(right(x_, bias_, ctx.approximate), (x_, bias_), grad)
            return grad_x, grad_bias * 0.9, None

    return lambda x, bias, approximate="none": WrongBiasGrad.apply(x, bias, approximate)


@needs_extension
def test_check_section_reports_a_wrong_bias_gradient(bench, monkeypatch):
    monkeypatch.setattr(k, "bias_gelu", _wrong_bias_gelu())
    results, failures = [], []
    bench.check_gelu_ops("cpu", results, failures, smoke=True)
    # Every dtype, GELU form, shape and alignment: 3 x 3 x 2 x 2 cases, and nothing else.
    assert len(failures) == 36 and all(f.startswith("bias_gelu grad bias ") for f in failures)


@needs_extension
def test_a_wrong_result_at_a_timed_shape_fails_the_run(bench, monkeypatch, tmp_path):
    # The timed shapes are the only ones with thousands of rows, so they are checked too.
    monkeypatch.setattr(k, "bias_gelu", _wrong_bias_gelu())
    out = tmp_path / "gelu.json"
    assert bench.main(["--smoke", "--sections", "gelu", "--json", str(out)]) == 1
    checks = {row["op"]: row["check"] for row in json.loads(out.read_text())["gelu"]}
    assert checks["gelu"] == "ok"
    assert checks["bias_gelu"].startswith("bwd bias: off by ")


@needs_extension
def test_a_failing_model_loses_no_other_row_and_frees_its_model(bench, monkeypatch, tmp_path):
    from cnbert.torch import BertForSpanExtraction

    def broken(scores, mask, scale):
        raise RuntimeError("kernel fault")

    monkeypatch.setattr(k, "scaled_masked_softmax", broken)  # only attention="fused" calls it
    live_cnbert_models = []
    timed = bench._time_training

    def counting(model, *args):
        live_cnbert_models.append(sum(type(o) is BertForSpanExtraction for o in gc.get_objects()))
        return timed(model, *args)

    monkeypatch.setattr(bench, "_time_training", counting)
    out = tmp_path / "training.json"
    assert bench.main(["--smoke", "--sections", "training", "--json", str(out)]) == 1
    rows = json.loads(out.read_text())["training"]
    assert [row["attention"] for row in rows] == ["sdpa", "fused", "sdpa"]
    assert rows[0]["ms_per_step"] > 0 and rows[2]["ms_per_step"] > 0
    assert "RuntimeError: kernel fault" in rows[1]["error"] and "ms_per_step" not in rows[1]
    # When Hugging Face's model is timed, no cnbert model is left to add to its peak memory.
    assert live_cnbert_models == [1, 1, 0]


@needs_extension
def test_no_timed_row_starts_after_the_time_limit(bench, tmp_path):
    out = tmp_path / "late.json"
    assert bench.main(["--smoke", "--sections", "check,softmax,training", "--check-set", "paths",
                       "--time-limit", "0", "--json", str(out)]) == 1
    results = json.loads(out.read_text())
    assert results["check"]["failures"] == []  # the time limit is for timed rows only
    assert [row["skipped"] for row in results["softmax"] + results["training"]] == ["time limit reached"] * 5
