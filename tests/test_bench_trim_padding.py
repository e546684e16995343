"""bench/trim_padding.py at toy sizes on real XNLI pairs: it runs, times both settings on the same
batches, and their losses agree (trimming cuts only columns every row masks); and the PyTorch
backend trims the classifiers' and taggers' batches, never the span models'."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, data_file
from cnbert.config import BertConfig
from cnbert.torch import backend
from cnbert.training import TrainingConfig


def test_benchmark_times_both_settings_on_the_same_batches(tmp_path):
    data = data_file("xnli_zh/dev.tsv").parents[1]
    out = tmp_path / "trim.json"
    proc = subprocess.run([sys.executable, "bench/trim_padding.py", "--task=xnli", f"--data={data}", "--steps=2",
                           "--layers=1", "--hidden=64", "--batch_size=8", "--device=cpu", f"--json={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "full width (baseline)" in proc.stdout and "trimmed to the longest row" in proc.stdout
    result = json.loads(out.read_text())
    assert result["full"]["mean_width"] == 105  # XNLI dev, padded to its longest pair
    assert result["trimmed"]["mean_width"] < 105  # median 49 pieces: few batches need all columns
    assert len(result["full"]["losses"]) == len(result["trimmed"]["losses"]) == len(result["grouped"]["losses"]) == 3
    assert result["grouped"]["mean_width"] < result["trimmed"]["mean_width"]
    assert result["max_loss_difference"] < 1e-5


@pytest.mark.parametrize("task, trims", [("lcqmc", True), ("msra_ner", True), ("cmrc2018", False), ("cjrc", False)])
def test_the_backend_trims_classifiers_and_taggers_but_not_span_models(task, trims):
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model, _ = backend.create_model(task, config)
    assert backend.Trainer(model, TrainingConfig(), task, show_progress=False).trim_padding is trims
