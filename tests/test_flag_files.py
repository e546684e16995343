"""The flag files in flags/ parse with cnbert-mrc's flags and hold the original list's settings
(REFERENCE.md section 1)."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

PARSE = """
import json, sys
from absl import flags
import cnbert.runners.mrc  # defines the flags
FLAGS = flags.FLAGS
FLAGS(["cnbert-mrc", "--flagfile=" + sys.argv[1]])
names = ["task", "max_seq_length", "doc_stride", "max_query_length", "max_answer_length", "n_best_size",
         "num_train_epochs", "train_batch_size", "learning_rate", "warmup_proportion", "weight_decay",
         "max_grad_norm", "seeds", "cjrc_dev_fraction"]
print(json.dumps({n: getattr(FLAGS, n) for n in names}))
"""

# model -> task -> (epochs, batch, learning rate, warm-up); lengths: roberta_large 256, the others 512
ORIGINAL = {
    "roberta_wwm_ext_base": {t: (2, 32, 3e-5, 0.1) for t in ("cmrc2018", "drcd", "cjrc")},
    "roberta_large": {t: (2, 32, 3e-5, 0.1) for t in ("cmrc2018", "drcd", "cjrc")},
    "albert_large": {"cmrc2018": (3, 32, 2e-5, 0.05), "drcd": (3, 32, 2e-5, 0.05), "cjrc": (2, 32, 3e-5, 0.1)},
}


def parse(flag_file):
    proc = subprocess.run([sys.executable, "-c", PARSE, str(flag_file)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", sorted(ORIGINAL))
@pytest.mark.parametrize("task", ["cmrc2018", "drcd", "cjrc"])
def test_flag_file_holds_the_original_settings(model, task):
    values = parse(REPO / "flags" / f"{task}_{model}.flags")
    epochs, batch, lr, warmup = ORIGINAL[model][task]
    assert values["task"] == task
    assert (values["num_train_epochs"], values["train_batch_size"]) == (epochs, batch)
    assert values["learning_rate"] == pytest.approx(lr) and values["warmup_proportion"] == pytest.approx(warmup)
    assert values["max_seq_length"] == (256 if model == "roberta_large" else 512)
    assert (values["doc_stride"], values["max_query_length"], values["max_answer_length"], values["n_best_size"]) == \
        (128, 64, 50, 20)
    assert (values["weight_decay"], values["max_grad_norm"]) == (0.01, 1.0)
    assert values["seeds"] == ["123", "456", "789", "556", "977"]
    assert values["cjrc_dev_fraction"] == (0.1 if task == "cjrc" else None)


def test_every_flag_file_is_checked():
    files = {p.name for p in (REPO / "flags").glob("*.flags")}
    expected = {f"{t}_{m}.flags" for m in ORIGINAL for t in ("cmrc2018", "drcd", "cjrc")} | {"demo.flags"}
    assert files == expected
    demo = parse(REPO / "flags" / "demo.flags")
    assert demo["task"] == "cmrc2018" and demo["max_seq_length"] == 256
