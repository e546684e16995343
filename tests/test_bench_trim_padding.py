"""bench/trim_padding.py at toy sizes on real XNLI pairs, in both frameworks: it runs, times both
settings on the same batches, and their losses agree (trimming cuts only columns every row masks);
and the PyTorch backend trims the classifiers' and taggers' batches, never the span models' (the
TF trainer's choice is tested in test_tf_trainer)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, data_file
from cnbert.config import BertConfig
from cnbert.torch import backend
from cnbert.training import TrainingConfig


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_benchmark_times_both_settings_on_the_same_batches(tmp_path, framework):
    data = data_file("xnli_zh/dev.tsv").parents[1]
    out = tmp_path / "trim.json"
    steps = 2 if framework == "torch" else 6  # TF times only steps whose width an earlier step compiled
    proc = subprocess.run([sys.executable, "bench/trim_padding.py", "--task=xnli", f"--data={data}", f"--steps={steps}",
                           "--layers=1", "--hidden=64", "--batch_size=8", f"--framework={framework}", f"--json={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "full width (baseline)" in proc.stdout and "trimmed, batches grouped by length" in proc.stdout
    result = json.loads(out.read_text())
    assert result["full"]["mean_width"] == 105 and result["full"]["widths"] == [105]  # XNLI dev's longest pair
    assert len(result["full"]["losses"]) == len(result["trimmed"]["losses"]) == len(result["grouped"]["losses"]) \
        == steps + 1
    assert result["grouped"]["mean_width"] < result["trimmed"]["mean_width"] <= 105  # median 49 pieces
    if framework == "torch":
        assert result["trimmed"]["mean_width"] < 105  # few batches of 8 need all the columns
        assert all(width % 8 == 0 or width == 105 for width in result["grouped"]["widths"])
    else:  # powers of two from 32, at most the set's width
        assert set(result["trimmed"]["widths"]) | set(result["grouped"]["widths"]) <= {32, 64, 105}
    assert result["full"]["timed_steps"] == steps and result["grouped"]["timed_steps"] >= 1
    assert result["max_loss_difference"] < 1e-5


@pytest.mark.parametrize("task, trims", [("lcqmc", True), ("msra_ner", True), ("cmrc2018", False), ("cjrc", False)])
def test_the_backend_trims_classifiers_and_taggers_but_not_span_models(task, trims):
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model, _ = backend.create_model(task, config)
    assert backend.Trainer(model, TrainingConfig(), task, show_progress=False).trim_padding is trims
