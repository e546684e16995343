"""The flag files in flags/ parse with their runner's flags and hold the published settings: the
original list's for reading comprehension (REFERENCE.md section 1); for classification, HFL
Chinese-BERT-wwm's best learning rates with Google run_classifier.py's other defaults; for MSRA NER,
ERNIE's base-model settings."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, data_file

PARSE = """
import dataclasses, json, sys
from absl import flags
import cnbert.runners.{runner}  # defines the flags
from cnbert.runners import common
FLAGS = flags.FLAGS
FLAGS(["cnbert", "--flagfile=" + sys.argv[1]])
names = [{names}]
values = {{n: getattr(FLAGS, n) for n in names}}
values["training"] = dataclasses.asdict(common.training_config(123))  # what the trainer is handed
print(json.dumps(values))
"""
SHARED = ("task", "max_seq_length", "num_train_epochs", "train_batch_size", "learning_rate", "warmup_proportion",
          "weight_decay", "adam_epsilon", "max_grad_norm", "seeds", "train_file", "dev_file", "test_file",
          "do_predict")
MRC_NAMES = SHARED + ("doc_stride", "max_query_length", "max_answer_length", "n_best_size", "cjrc_dev_fraction")

# model -> task -> (epochs, batch, learning rate, warm-up); lengths: roberta_large 256, the others 512
ORIGINAL = {
    "roberta_wwm_ext_base": {t: (2, 32, 3e-5, 0.1) for t in ("cmrc2018", "drcd", "cjrc")},
    "roberta_middle": {t: (2, 32, 3e-5, 0.1) for t in ("cmrc2018", "drcd", "cjrc")},
    "roberta_large": {t: (2, 32, 3e-5, 0.1) for t in ("cmrc2018", "drcd", "cjrc")},
    "albert_large": {"cmrc2018": (3, 32, 2e-5, 0.05), "drcd": (3, 32, 2e-5, 0.05), "cjrc": (2, 32, 3e-5, 0.1)},
}


def parse(flag_file, runner="mrc", names=MRC_NAMES):
    code = PARSE.format(runner=runner, names=", ".join(map(repr, names)))
    proc = subprocess.run([sys.executable, "-c", code, str(flag_file)], capture_output=True, text=True, cwd=REPO,
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
    assert values["training"]["lr_schedule"] == "linear"  # Google BERT's optimization.py decays to 0


# the data files each reading-comprehension flag file names that $CNBERT_DATA holds (DRCD's training
# file is not there)
MRC_AVAILABLE = {"cmrc2018": ("train_file", "dev_file"), "drcd": ("dev_file",), "cjrc": ("train_file", "dev_file")}


@pytest.mark.parametrize("task", sorted(MRC_AVAILABLE))
def test_reading_comprehension_flag_files_name_the_data_where_it_is(task):
    for model in sorted(ORIGINAL):
        values = parse(REPO / "flags" / f"{task}_{model}.flags")
        for name in MRC_AVAILABLE[task]:
            relative = values[name].removeprefix("$CNBERT_DATA/")
            assert relative != values[name] and data_file(relative).is_file(), (model, values[name])
        if task == "cjrc":  # the original list trains on 90 % of the one labelled file and scores the rest
            assert values["dev_file"] == values["train_file"], model


# task -> (learning rate, max_seq_length): HFL's best learning rate for the BERT-wwm family; lengths
# measured on the data (see each file's comment)
CLASSIFICATION = {"chnsenticorp": (2e-5, 256), "lcqmc": (2e-5, 128), "xnli": (3e-5, 128), "thucnews": (2e-5, 512),
                  "dbqa": (2e-5, 256), "thucnews_titles": (2e-5, 64)}
# the data files each classification flag file names that $CNBERT_DATA holds (XNLI, DBQA and THUCNews
# headlines train and the THUCNews cnews split are not there)
AVAILABLE = {"chnsenticorp": ("train_file", "dev_file", "test_file"), "lcqmc": ("train_file", "dev_file", "test_file"),
             "xnli": ("dev_file", "test_file"), "thucnews": (), "dbqa": ("dev_file", "test_file"),
             "thucnews_titles": ("dev_file", "test_file")}


@pytest.mark.parametrize("task", sorted(CLASSIFICATION))
def test_classification_flag_file_holds_the_published_settings(task):
    values = parse(REPO / "flags" / f"{task}_roberta_wwm_ext_base.flags", "classify", SHARED)
    lr, length = CLASSIFICATION[task]
    assert values["task"] == task and values["max_seq_length"] == length
    assert values["learning_rate"] == pytest.approx(lr)
    # Google run_classifier.py / optimization.py: 3 epochs, batch 32, warm-up 0.1, AdamWeightDecay
    # with weight decay 0.01 and epsilon 1e-6, global-norm clip 1.0
    assert (values["num_train_epochs"], values["train_batch_size"], values["warmup_proportion"]) == (3, 32, 0.1)
    assert (values["weight_decay"], values["adam_epsilon"], values["max_grad_norm"]) == (0.01, 1e-6, 1.0)
    assert values["training"]["lr_schedule"] == "linear"
    assert values["seeds"] == ["123", "456", "789", "556", "977"] and values["do_predict"]
    for name in AVAILABLE[task]:
        relative = values[name].removeprefix("$CNBERT_DATA/")
        assert relative != values[name], values[name]
        assert data_file(relative).is_file()  # the path the flag file names is where the data is


def test_ner_flag_file_holds_ernies_published_settings():
    values = parse(REPO / "flags" / "msra_ner_roberta_wwm_ext_base.flags", "ner", SHARED + ("doc_stride",))
    assert values["task"] == "msra_ner" and values["max_seq_length"] == 256 and values["doc_stride"] is None
    # PaddlePaddle/ERNIE: README table (batch 16, lr 5e-5 for base) and ernie_base/run_msra_ner.sh (6 epochs,
    # no warm-up, so optimization.py keeps the rate constant; weight decay 0.01; clip 1.0; Paddle Adam epsilon)
    training = values["training"]
    assert (training["num_train_epochs"], training["train_batch_size"]) == (6, 16)
    assert training["learning_rate"] == pytest.approx(5e-5)
    assert (training["warmup_proportion"], training["lr_schedule"]) == (0, "constant")
    assert (training["weight_decay"], training["adam_epsilon"], training["max_grad_norm"]) == (0.01, 1e-8, 1.0)
    assert values["seeds"] == ["123", "456", "789", "556", "977"]
    for name in ("train_file", "dev_file"):
        relative = values[name].removeprefix("$CNBERT_DATA/")
        assert relative != values[name] and data_file(relative).is_file(), values[name]
    assert values["dev_file"].endswith("msra_test_bio.txt")  # MSRA has no development split


def test_every_flag_file_is_checked():
    files = {p.name for p in (REPO / "flags").glob("*.flags")}
    expected = ({f"{t}_{m}.flags" for m in ORIGINAL for t in ("cmrc2018", "drcd", "cjrc")} | {"demo.flags"}
                | {f"{t}_roberta_wwm_ext_base.flags" for t in CLASSIFICATION}
                | {"msra_ner_roberta_wwm_ext_base.flags"})
    assert files == expected
    demo = parse(REPO / "flags" / "demo.flags")
    assert demo["task"] == "cmrc2018" and demo["max_seq_length"] == 256


def test_without_a_flag_file_the_windows_decoding_and_schedule_are_the_original_list_s(tmp_path):
    empty = tmp_path / "empty.flags"
    empty.write_text("")
    values = parse(empty)
    assert (values["doc_stride"], values["max_query_length"], values["max_answer_length"], values["n_best_size"]) == \
        (128, 64, 50, 20)
    assert values["warmup_proportion"] == 0.1 and values["training"]["lr_schedule"] == "linear"


def test_boolean_flags_turn_off_from_a_flag_file(tmp_path):
    # the original list's type=bool flags were true whatever was passed (REFERENCE.md section 5)
    off = tmp_path / "off.flags"
    off.write_text("--do_lower_case=false\n--nodo_predict\n--group_by_length=False\n--do_predict=true\n--nodo_predict\n")
    values = parse(off, names=("do_lower_case", "do_predict", "group_by_length"))
    assert (values["do_lower_case"], values["do_predict"], values["group_by_length"]) == (False, False, False)
    on = tmp_path / "on.flags"
    on.write_text("--nodo_lower_case\n--do_lower_case=true\n--group_by_length\n")
    values = parse(on, names=("do_lower_case", "group_by_length"))
    assert (values["do_lower_case"], values["group_by_length"]) == (True, True)


def test_every_training_flag_reaches_the_training_config(tmp_path):
    # the flag files hold the defaults of several of these, so a flag left unpassed would not show there
    flag_file = tmp_path / "x.flags"
    flag_file.write_text("--max_grad_norm=0.5\n--weight_decay=0.05\n--adam_epsilon=1e-7\n--lr_schedule=constant\n"
                         "--warmup_proportion=0.2\n--gradient_accumulation_steps=2\n--group_by_length\n")
    training = parse(flag_file)["training"]
    assert (training["max_grad_norm"], training["weight_decay"], training["adam_epsilon"]) == (0.5, 0.05, 1e-7)
    assert (training["lr_schedule"], training["warmup_proportion"]) == ("constant", 0.2)
    assert training["gradient_accumulation_steps"] == 2 and training["group_by_length"] is True
