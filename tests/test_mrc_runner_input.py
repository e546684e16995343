"""cnbert-mrc refuses bad input before it trains or writes anything: each case exits non-zero with
a message naming the flag or file, without a traceback, and leaves the output directory as it was."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from test_mrc_runner import SIZES, TINY, patched_runner, run_cli

from cnbert.config import BertConfig
from cnbert.torch import backend

SAMPLE = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny_bert_config.json"
    path.write_text(json.dumps(TINY))
    return path


def without_answers(tmp_path, name="questions.json"):
    """The sample file with every question's answers removed (questions to answer, not to score)."""
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                del qa["answers"]
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def train_args(tiny_config, out, *extra):
    return ["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={SAMPLE}", f"--dev_file={SAMPLE}",
            f"--output_dir={out}", *SIZES, "--num_train_epochs=1", "--train_batch_size=8", "--seeds=123", *extra]


def saved_cmrc_model(tmp_path):
    """A tiny random CMRC 2018 model saved as a training run saves its best model."""
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    model, _ = backend.create_model("cmrc2018", BertConfig.from_dict(TINY))
    backend.save_pretrained(model, model_dir, REPO / "cnbert" / "resources" / "vocab.txt")
    return model_dir


def assert_refused(proc, message):
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "seed 123:" not in proc.stdout  # no training happened


def test_bad_data_with_overwrite_leaves_the_earlier_run_as_it_was(tmp_path, tiny_config):
    out = tmp_path / "out"
    earlier = {"report.md": "earlier report", "flags.txt": "earlier flags", "seed_123/best_model/config.json": "{}"}
    for name, text in earlier.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    bad_dev = without_answers(tmp_path, "dev.json")
    proc = run_cli(train_args(tiny_config, out, f"--dev_file={bad_dev}", "--overwrite_output_dir"), check=False)
    assert_refused(proc, f"{bad_dev}: question ")
    assert "missing field 'answers'" in proc.stderr
    assert {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()} == earlier


def test_an_unlabelled_test_file_is_refused_before_training(tmp_path, tiny_config):
    test_file = without_answers(tmp_path, "test.json")
    out = tmp_path / "out"
    proc = run_cli(train_args(tiny_config, out, "--do_predict", f"--test_file={test_file}"), check=False)
    assert_refused(proc, f"{test_file}: question ")
    assert not out.exists()


def zero_width_passages(tmp_path):
    """The sample with every passage replaced by zero-width spaces, which the tokenizer drops."""
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["context"] = "\u200b" * 5
            for qa in paragraph["qas"]:
                qa["answers"] = [{"text": "\u200b", "answer_start": 0}]
    path = tmp_path / "zero_width.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("flag", ["--dev_file", "--test_file"])
def test_a_file_with_nothing_to_answer_is_refused_before_the_earlier_run_is_touched(tmp_path, tiny_config, flag):
    out = tmp_path / "out"
    (out / "seed_123").mkdir(parents=True)
    (out / "report.md").write_text("earlier report")
    empty = tmp_path / "empty.json"
    empty.write_text('{"version": "v1.0", "data": []}')
    for bad, message in ((empty, f"{empty}: no questions"),
                         (zero_width_passages(tmp_path), "nothing to answer from: no passage of its 23 questions has "
                                                         "text the tokenizer keeps")):
        extra = [f"{flag}={bad}"] + (["--do_predict"] if flag == "--test_file" else [])
        proc = run_cli(train_args(tiny_config, out, *extra, "--overwrite_output_dir"), check=False)
        assert proc.returncode == 1
        assert_refused(proc, message)
        assert (out / "report.md").read_text() == "earlier report" and (out / "seed_123").is_dir()


def test_predict_mode_refuses_what_it_cannot_answer(tmp_path):
    model_dir = saved_cmrc_model(tmp_path)
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={model_dir}", "--question=谁？",
                    "--context=\u200b\u200b", *SIZES], check=False)
    assert_refused(proc, "--context: nothing to answer from: no passage of its 1 questions has text the tokenizer")
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={model_dir}",
                    f"--predict_file={zero_width_passages(tmp_path)}", f"--output_dir={tmp_path / 'answers'}", *SIZES],
                   check=False)
    assert_refused(proc, "zero_width.json: nothing to answer from")
    assert not (tmp_path / "answers").exists()


def test_cjrc_split_needs_two_passages(tmp_path, tiny_config):
    # one passage twice, once with an HTML entity: a copy is not a second passage
    paragraphs = [{"context": f"原告与被告于2010年登记结婚{end}",
                   "qas": [{"id": f"q{end}{i}", "question": "何时结婚？", "is_impossible": "false",
                            "answers": [{"text": "2010年", "answer_start": 6}]} for i in range(3)]}
                  for end in ("……", "&hellip;&hellip;")]
    one_passage = {"data": [{"caseid": "1", "domain": "civil", "paragraphs": paragraphs}]}
    train = tmp_path / "cjrc.json"
    train.write_text(json.dumps(one_passage, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli(["--task=cjrc", f"--bert_config_file={tiny_config}", f"--train_file={train}",
                    "--cjrc_dev_fraction=0.1", f"--output_dir={out}", *SIZES, "--seeds=123"], check=False)
    assert proc.returncode == 1
    assert_refused(proc, f"{train}: --cjrc_dev_fraction splits the file by passage, and it has 1 passage(s), "
                         "copies counted once: at least two are needed")
    assert not out.exists()


def test_a_train_file_without_a_usable_answer_is_named(tmp_path, tiny_config):
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                qa["answers"] = [{"text": "这段文字不在文章里", "answer_start": 0}]
    train = tmp_path / "train.json"
    train.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli(train_args(tiny_config, out, f"--train_file={train}"), check=False)
    assert_refused(proc, f"{train}: no training features")
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--n_best_size=0"], "--n_best_size must be at least 1, got 0"),
    (["--max_answer_length=-1"], "--max_answer_length must be at least 1, got -1"),
    (["--num_train_epochs=nan"], "num_train_epochs must be a finite number, got nan"),
    (["--learning_rate=inf"], "learning_rate must be a finite number, got inf"),
    (["--seeds=123,123"], "--seeds must be distinct integers, got [123, 123]"),  # the second would overwrite the first
    (["--hidden_dropout_prob=1"], "--hidden_dropout_prob must be a dropout rate in [0, 1), got 1.0"),
    (["--train_file=$CNBERT_TEST_NOWHERE/missing.json"], "--train_file=/nonexistent-dir/missing.json: no such file"),
])
def test_bad_flags_are_refused_up_front(tmp_path, tiny_config, extra, message, monkeypatch):
    monkeypatch.setenv("CNBERT_TEST_NOWHERE", "/nonexistent-dir")  # flag files name data as $CNBERT_DATA/...
    out = tmp_path / "out"
    assert_refused(run_cli(train_args(tiny_config, out, *extra), check=False), message)
    assert not out.exists()


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, tiny_config):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert_refused(run_cli(train_args(tiny_config, afile), check=False),
                   f"--output_dir={afile} is a file; it must be a directory")
    assert_refused(run_cli(train_args(tiny_config, afile / "sub"), check=False),
                   f"--output_dir={afile / 'sub'} is under {afile}, a file")
    assert afile.read_text() == "mine"


# A folder named read_only behaves as one on a read-only file system (as root, which CI may be,
# chmod would not stop the writes).
READ_ONLY_FOLDERS = """
    import errno
    import os
    import tempfile

    make_folder = tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.basename(dir) == "read_only":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)
        return make_folder(*args, dir=dir, **kwargs)

    tempfile.mkdtemp = mkdtemp
"""


def test_an_output_dir_that_cannot_be_written_is_refused_before_any_work(tmp_path, tiny_config):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    script = patched_runner(tmp_path, READ_ONLY_FOLDERS)
    assert_refused(run_cli(train_args(tiny_config, read_only), check=False, script=script),
                   f"--output_dir={read_only} cannot be written: Read-only file system")
    assert_refused(run_cli(train_args(tiny_config, read_only / "run"), check=False, script=script),
                   f"--output_dir={read_only / 'run'} cannot be written (it would be made in {read_only}): "
                   "Read-only file system")
    assert list(read_only.iterdir()) == []


def test_another_process_s_write_check_leaves_the_output_dir_empty(tmp_path, tiny_config):
    # under torchrun every process checks that --output_dir can be written (a folder made and removed
    # there) while rank 0 checks that it is empty; the batch split is checked right after
    out = tmp_path / "out"
    (out / ".cnbert-write-check-x1y2z3").mkdir(parents=True)
    unsplittable = ["--train_batch_size=2", "--gradient_accumulation_steps=3"]
    assert_refused(run_cli(train_args(tiny_config, out, *unsplittable), check=False),
                   "--train_batch_size=2 cannot be split over 1 process(es) x 3 accumulation steps")
    (out / "notes.txt").write_text("mine")
    assert_refused(run_cli(train_args(tiny_config, out, *unsplittable), check=False),
                   f"--output_dir={out} is not empty")


def test_a_config_with_one_token_type_is_refused_for_reading_comprehension(tmp_path):
    one_type = tmp_path / "one_type.json"
    one_type.write_text(json.dumps({**TINY, "type_vocab_size": 1}))
    proc = run_cli(train_args(one_type, tmp_path / "out"), check=False)
    assert_refused(proc, f"{one_type}: type_vocab_size is 1, but reading comprehension needs token types 0")


def test_predict_mode_answers_questions_without_answers(tmp_path):
    model_dir = saved_cmrc_model(tmp_path)
    questions = without_answers(tmp_path)
    out = tmp_path / "answers"
    run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={model_dir}", f"--predict_file={questions}",
             f"--output_dir={out}", *SIZES])
    answers = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    data = json.loads(questions.read_text(encoding="utf-8"))
    ids = {qa["id"] for article in data["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
    assert set(answers) == ids and all(isinstance(text, str) for text in answers.values())
    # the decoding settings saved beside the model are used too, n-best size included
    nbest = json.loads((out / "nbest_predictions.json").read_text(encoding="utf-8"))
    assert max(len(candidates) for candidates in nbest.values()) > 2
    (model_dir / "cnbert_mrc_settings.json").write_text(json.dumps({"n_best_size": 2, "null_score_threshold": 1.5}))
    again = ["--mode=predict", "--task=cmrc2018", f"--model_dir={model_dir}", f"--predict_file={questions}",
             f"--output_dir={out}", *SIZES]
    # the earlier answers are kept unless the user says to replace them
    earlier = (out / "predictions.json").read_bytes()
    assert_refused(run_cli(again, check=False), f"--output_dir={out} is not empty; pass --overwrite_output_dir")
    assert (out / "predictions.json").read_bytes() == earlier
    proc = run_cli(again + ["--overwrite_output_dir"])
    assert "as in training (cnbert_mrc_settings.json): --n_best_size=2, --null_score_threshold=1.5" in proc.stdout
    nbest = json.loads((out / "nbest_predictions.json").read_text(encoding="utf-8"))
    assert max(len(candidates) for candidates in nbest.values()) == 2


def test_an_interrupted_predict_run_leaves_the_earlier_answers_and_n_best_lists_together(tmp_path):
    """predictions.json and nbest_predictions.json are replaced as one set: Ctrl-C while they are
    written leaves both as the earlier run wrote them."""
    model_dir = saved_cmrc_model(tmp_path)
    questions = without_answers(tmp_path)
    out = tmp_path / "answers"
    common_args = ["--mode=predict", "--task=cmrc2018", f"--model_dir={model_dir}", f"--output_dir={out}", *SIZES]
    run_cli(common_args + [f"--predict_file={questions}"])
    earlier = {name: (out / name).read_bytes() for name in ("predictions.json", "nbest_predictions.json")}
    data = json.loads(questions.read_text(encoding="utf-8"))
    data["data"] = data["data"][1:]  # other questions: a new set differs from the earlier one
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    script = patched_runner(tmp_path, """
        from cnbert.data import mrc_postprocess
        written = mrc_postprocess.write_json
        def write_json(path, value, **kwargs):
            if path.name == "nbest_predictions.json":
                raise KeyboardInterrupt  # Ctrl-C after the answers were written, before their n-best lists
            return written(path, value, **kwargs)
        mrc_postprocess.write_json = write_json
    """)
    proc = run_cli(common_args + [f"--predict_file={fewer}", "--overwrite_output_dir"], check=False, script=script)
    assert proc.returncode == 130
    assert {name: (out / name).read_bytes() for name in earlier} == earlier
    assert sorted(path.name for path in out.iterdir()) == sorted(earlier)  # no staging directory left


def test_overwrite_removes_an_earlier_report_before_training(tmp_path):
    # were this run to stop early, a report of the earlier run's seeds must not sit beside its files
    from cnbert.runners import training_run

    out = tmp_path / "out"
    for name in ("report.md", "report.json", "notes.txt", "seed_123/eval_results.json", "seed_7/eval_results.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("earlier")
    training_run.remove_earlier_outputs(out, [123])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["notes.txt", "seed_7", "seed_7/eval_results.json"]


@pytest.mark.parametrize("extra, message", [
    (["--test_file={sample}"], "--test_file is scored only with --do_predict"),
    (["--init_checkpoint={tmp}"], "--init_checkpoint brings its own config; --bert_config_file is for a randomly"),
    (["--model_dir={tmp}"], "--model_dir applies to --mode=predict, and this run is --mode=train"),
    (["--question=谁？"], "--question applies to --mode=predict, and this run is --mode=train"),
    (["--distribution_strategy=mirrored"], "--distribution_strategy is for --framework=tf"),
    (["--hidden_dropout_prob=1.5"], "--hidden_dropout_prob must be a dropout rate in [0, 1), got 1.5"),
    (["--attention_probs_dropout_prob=-1"], "--attention_probs_dropout_prob must be a dropout rate in [0, 1), got -1"),
    (["--classifier_dropout=0.2"], "--classifier_dropout applies to a classification head (cjrc's answer class), "
                                   "and --task=cmrc2018's span head has none"),
    (["--framework=tf", "--device=cuda"], "--device=cuda: device=cuda was asked for, but TensorFlow sees no GPU"),
])
def test_flags_the_run_would_ignore_are_refused(tmp_path, tiny_config, extra, message):
    """A flag that would have no effect is an error, not a silent no-op (the user expects it to act)."""
    extra = [e.format(sample=SAMPLE, tmp=tmp_path) for e in extra]
    out = tmp_path / "out"
    assert_refused(run_cli(train_args(tiny_config, out, *extra), check=False), message)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no CUDA device")
def test_device_cuda_without_a_gpu_is_a_usage_error(tmp_path, tiny_config):
    # run_cli passes --device=cpu first; the later flag wins
    proc = run_cli(train_args(tiny_config, tmp_path / "out", "--device=cuda"), check=False)
    assert_refused(proc, "--device=cuda: device=cuda was asked for, but this torch")


@pytest.mark.parametrize("extra, message", [
    (["--train_file={sample}"], "--train_file applies to --mode=train, and this run is --mode=predict"),
    (["--learning_rate=1e-5"], "--learning_rate applies to --mode=train, and this run is --mode=predict"),
    (["--hidden_dropout_prob=0"], "--hidden_dropout_prob applies to --mode=train, and this run is --mode=predict"),
    (["--classifier_dropout=0"], "--classifier_dropout applies to --mode=train, and this run is --mode=predict"),
    (["--group_by_length"], "--group_by_length applies to --mode=train, and this run is --mode=predict"),
    (["--lr_schedule=constant"], "--lr_schedule applies to --mode=train, and this run is --mode=predict"),
    (["--output_dir={tmp}/answers"], "--output_dir is for --predict_file; --question/--context print the answer"),
    (["--framework=tf", "--attention=fused"], "--attention chooses among the PyTorch implementations"),
    (["--null_score_threshold=5"], "--null_score_threshold applies to tasks with unanswerable questions (cjrc), "
                                   "and --task=cmrc2018 has none"),
])
def test_flags_predict_mode_would_ignore_are_refused(tmp_path, extra, message):
    extra = [e.format(sample=SAMPLE, tmp=tmp_path) for e in extra]
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={tmp_path}", "--question=谁？",
                    "--context=范廷颂是越南罗马天主教枢机。", *extra], check=False)
    assert_refused(proc, message)
    assert not (tmp_path / "answers").exists()


def test_a_missing_model_dir_is_named(tmp_path):
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={tmp_path / 'nomodel'}", "--question=谁？",
                    "--context=范廷颂是越南罗马天主教枢机。"], check=False)
    assert_refused(proc, f"--model_dir={tmp_path / 'nomodel'}: not a directory")


def test_a_missing_init_checkpoint_is_named(tmp_path):
    missing = tmp_path / "SiBertV0" / "model.ckpt-5000"
    proc = run_cli(["--task=cmrc2018", f"--init_checkpoint={missing}", f"--train_file={SAMPLE}", f"--dev_file={SAMPLE}",
                    f"--output_dir={tmp_path / 'out'}"], check=False)
    assert_refused(proc, f"--init_checkpoint={missing}: neither a model directory nor a TF checkpoint prefix")
    assert proc.returncode == 2


def test_a_usage_error_is_one_short_message_under_python_m(tmp_path, tiny_config):
    # absl would print the module docstring and every flag's help when the runner is __main__
    out = tmp_path / "out"
    (out / "seed_123").mkdir(parents=True)
    proc = run_cli(train_args(tiny_config, out), check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"cnbert-mrc: error: --output_dir={out} is not empty; pass "
                                        "--overwrite_output_dir to reuse it", "(cnbert-mrc --help lists the flags)"]


@pytest.mark.parametrize("flag, message", [
    ("--no_such_flag=1", "Unknown command line flag 'no_such_flag'"),
    ("--precision=fp8", "flag --precision=fp8: value should be one of <fp32|bf16|fp16>"),
])
def test_a_flag_absl_cannot_parse_is_a_usage_error_too(tmp_path, tiny_config, flag, message):
    proc = run_cli(train_args(tiny_config, tmp_path / "out", flag), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("cnbert-mrc: error: ") and message in proc.stderr, proc.stderr
    assert proc.stderr.rstrip().endswith("(cnbert-mrc --help lists the flags)")


def test_ctrl_c_during_training_ends_with_a_message_and_status_130(tmp_path, tiny_config):
    """Ctrl-C at the third optimizer step (raised where SIGINT would raise it): no traceback, exit
    status 130, and nothing of the interrupted seed beyond complete outputs."""
    script = patched_runner(tmp_path, """
        from cnbert.training import TrainingRun

        check_loss = TrainingRun.check_loss

        def interrupt_at_step_3(self, step, loss):
            if step == 3:
                raise KeyboardInterrupt
            return check_loss(self, step, loss)

        TrainingRun.check_loss = interrupt_at_step_3
    """)
    out = tmp_path / "out"
    proc = run_cli(train_args(tiny_config, out, "--eval_every=1", "--train_batch_size=2"), check=False,
                   script=script)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "cnbert-mrc: interrupted; every output already written is complete" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (out / "report.md").exists()
    written = {str(p.relative_to(out)) for p in out.rglob("*")}
    assert "seed_123/best_model/cnbert_mrc_settings.json" in written  # evaluated at steps 1 and 2
    assert not [name for name in written if ".tmp" in name], written


@pytest.mark.parametrize("settings, message", [
    ({"max_seq_length": "128"}, "max_seq_length must be an integer, got '128'"),
    ({"doc_stride": True}, "doc_stride must be an integer, got True"),
    ({"do_lower_case": 1}, "do_lower_case must be true or false, got 1"),
    ({"null_score_threshold": "0.5"}, "null_score_threshold must be a finite number, got '0.5'"),
    ([128, 64], "expected a JSON object of training settings, got list"),
])
def test_a_damaged_settings_file_beside_the_model_is_named(tmp_path, settings, message):
    settings_file = tmp_path / "cnbert_mrc_settings.json"
    settings_file.write_text(json.dumps(settings))
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={tmp_path}", "--question=谁？",
                    "--context=范廷颂是越南罗马天主教枢机。"], check=False)
    assert_refused(proc, f"{settings_file}: {message}")


@pytest.mark.parametrize("settings, message", [
    ({"n_best_size": 0}, "--n_best_size must be at least 1, got 0 (--n_best_size from cnbert_mrc_settings.json "
                         "beside --model_dir)"),
    ({"max_seq_length": 64, "max_query_length": 16, "doc_stride": 1000},
     "doc_stride (1000) is larger than the smallest passage window (max_seq_length - max_query_length - 3 = 45); "),
    ({"max_seq_length": 64, "max_query_length": 16, "doc_stride": 1000},
     "(--max_seq_length, --max_query_length, --doc_stride from cnbert_mrc_settings.json beside --model_dir)"),
    ({"max_seq_length": 64}, "max_seq_length (64) leaves no room for the passage: it must be at least "
                             "max_query_length + 4 = 68 ([CLS] question [SEP] passage [SEP]) (--max_seq_length from "
                             "cnbert_mrc_settings.json beside --model_dir)"),
])
def test_a_bad_value_in_the_settings_beside_the_model_is_traced_to_that_file(tmp_path, settings, message):
    model_dir = saved_cmrc_model(tmp_path)
    (model_dir / "cnbert_mrc_settings.json").write_text(json.dumps({"task": "cmrc2018", **settings}))
    question = ["--mode=predict", "--task=cmrc2018", f"--model_dir={model_dir}", "--question=谁？",
                "--context=范廷颂是越南罗马天主教枢机。"]
    proc = run_cli(question, check=False)
    assert proc.returncode == 2
    assert_refused(proc, message)
    # a bad value typed on the command line is not blamed on the file
    (model_dir / "cnbert_mrc_settings.json").write_text(json.dumps({"task": "cmrc2018", "max_seq_length": 64}))
    proc = run_cli(question + ["--doc_stride=0"], check=False)
    assert_refused(proc, "cnbert-mrc: error: doc_stride must be a positive integer, got 0\n")


def test_dev_file_equal_to_train_file_is_warned_about_and_flags_txt_reruns_the_run(tmp_path, tiny_config):
    out = tmp_path / "out"
    proc = run_cli(train_args(tiny_config, out, "--num_train_epochs=0.1"))
    assert "WARNING: --dev_file is --train_file" in proc.stdout
    # flags.txt names every flag, defaults included: none of them may be refused as ignored
    first = json.loads((out / "report.json").read_text())
    run_cli([f"--flagfile={out / 'flags.txt'}", "--overwrite_output_dir"])
    assert json.loads((out / "report.json").read_text())["seeds"] == first["seeds"]


def test_tf_predict_mode_uses_the_distribution_strategy_asked_for(tmp_path):
    script = patched_runner(tmp_path, """
        from cnbert.tf.trainer import Trainer

        init = Trainer.__init__

        def reporting_init(self, *args, **kwargs):
            init(self, *args, **kwargs)
            print("strategy replicas:", type(self.strategy).__name__, self.replicas)

        Trainer.__init__ = reporting_init
    """)
    model_dir = saved_cmrc_model(tmp_path)
    proc = run_cli(["--mode=predict", "--task=cmrc2018", "--framework=tf", "--distribution_strategy=mirrored",
                    f"--model_dir={model_dir}", "--question=谁？", "--context=范廷颂是越南罗马天主教枢机。", *SIZES],
                   script=script)
    assert "strategy replicas: MirroredStrategy 1" in proc.stdout, proc.stdout[-2000:]
    assert '"answer":' in proc.stdout


def test_a_flag_file_that_is_not_utf8_is_a_usage_error_naming_it(tmp_path):
    flag_file = tmp_path / "run.flags"
    flag_file.write_text("--task=cmrc2018\n", encoding="utf-16")  # as Windows Notepad saves "Unicode"
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--seeds=1\n--flagfile={flag_file}\n")
    for args in ([f"--flagfile={flag_file}"], ["--flagfile", str(flag_file)], [f"--flagfile={outer}"]):
        proc = run_cli(args, check=False)
        assert proc.returncode == 2
        assert_refused(proc, f"cnbert-mrc: error: cannot read --flagfile={flag_file} as UTF-8 text: 'utf-8' codec")


@pytest.mark.parametrize("script, own_flag", [("cnbert-mrc", "--doc_stride"), ("cnbert-classify", "--text_a"),
                                              ("cnbert-ner", "--max_seq_length"), ("cnbert-score", "--predictions_file")])
def test_installed_scripts_help_lists_their_flags(script, own_flag):
    """absl's --help lists the flags of the module sys.argv[0] names: for an installed script, the
    wrapper, unless the runner hands its flags over. A usage error points users at --help."""
    path = Path(sys.executable).with_name(script)
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr  # absl's help flag exits with 1: asking for help is no error
    listed = [line.split(":")[0].strip() for line in result.stdout.splitlines() if line.startswith("  --")]
    assert own_flag in listed and "--task" in listed, result.stdout[:2000]


def test_help_into_a_pipe_closed_early_is_no_flag_file_error():
    """`cnbert-mrc --help | head -1`: the pipe closes before the help is written. That is no flag
    file's fault (an OSError from absl's parsing was once all taken for one): a quiet exit 1."""
    proc = subprocess.Popen([str(Path(sys.executable).with_name("cnbert-mrc")), "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the runner has even started
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "flagfile" not in stderr and "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


SEED_STARTS = """
import hashlib, json, sys, types
from pathlib import Path
import torch
from absl import flags
from cnbert.runners import mrc, run_dir, training_run  # mrc defines --task
from cnbert.config import BertConfig
from cnbert.torch import backend
from cnbert.torch.distributed import DistContext

flags.FLAGS(["cnbert-mrc", "--task=cmrc2018", "--seeds=123,456", "--init_seed=7"])
starts = []

def digest(model):
    return hashlib.sha1(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()

class FakeTrainer:  # records what each seed starts from; its 'training' changes every weight
    def __init__(self, model, config, task, **kwargs):
        starts.append((config.seed, digest(model)))
        self.model = model
    def fit(self, train, evaluate=None, criterion=None, on_new_best=None):
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(1.0)
        return types.SimpleNamespace(best_metrics={"F1": 0.0, "EM": 0.0}, best_step=1)

fake = types.SimpleNamespace(Trainer=FakeTrainer, seed_everything=backend.seed_everything,
                             create_model=backend.create_model)
config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32)
factory = training_run.initial_model_factory(fake, "cmrc2018", config, None, False)
first = factory()
torch.manual_seed(12345)  # whatever ran in between moved the random streams
setup = training_run.TrainingSetup(program="cnbert-mrc", runner_module="cnbert.runners.mrc", seeds=[123, 456],
                                   config=config, vocab=None, backend=fake, ctx=DistContext(), rank0=False,
                                   out=Path(sys.argv[1]), initial_model=factory, first_model=first, tokenizer=None,
                                   environment={}, earlier=run_dir.EarlierSeeds({}, {}))
task = types.SimpleNamespace(criterion=lambda m: 0.0, metric_names=())
training_run.train_seeds(setup, task, {}, None, ("settings.json", {}))
print(json.dumps(starts))
"""


def test_every_seed_starts_from_the_same_initial_weights_with_its_own_seed(tmp_path):
    """train_seeds: seed 456 starts from the weights seed 123 started from (initial_model reseeds
    with --init_seed), not from 123's trained model, and trains with seed 456."""
    proc = subprocess.run([sys.executable, "-c", SEED_STARTS, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    starts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [seed for seed, _ in starts] == [123, 456] and starts[0][1] == starts[1][1]


DECODING_FLAGS = """
import json, types
from absl import flags
from cnbert.runners import mrc
flags.FLAGS(["cnbert-mrc", "--task=cjrc", "--max_answer_length=7", "--n_best_size=3", "--null_score_threshold=0.5"])
seen = {}
class Stop(Exception):
    pass
def recording_postprocess(examples, features, start_logits, end_logits, **kwargs):
    seen.update(kwargs)
    raise Stop
mrc.postprocess_predictions = recording_postprocess
trainer = types.SimpleNamespace(predict=lambda arrays: {"start_logits": None, "end_logits": None})
try:
    mrc._predict_examples(trainer, [], types.SimpleNamespace(model_arrays=dict), "cjrc")
except Stop:
    pass
print(json.dumps({k: v for k, v in seen.items() if k != "class_logits"}))
"""


def test_the_decoding_flags_reach_postprocessing():
    proc = subprocess.run([sys.executable, "-c", DECODING_FLAGS], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"n_best_size": 3, "max_answer_length": 7,
                                                               "null_score_threshold": 0.5}


PREDICT_SETUP = """
import json, sys
import torch
from absl import flags
from cnbert.runners import mrc, prediction  # mrc defines --task
from cnbert.config import BertConfig
from cnbert.tokenization import bundled_vocab_path
from cnbert.torch import backend

torch.manual_seed(0)
config = BertConfig(vocab_size=21128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=64)  # attention: the default, sdpa
model, _ = backend.create_model("cmrc2018", config)
backend.save_pretrained(model, sys.argv[1], bundled_vocab_path())
flags.FLAGS(["cnbert-mrc", "--task=cmrc2018", "--mode=predict", "--model_dir=" + sys.argv[1], "--attention=eager",
             "--fullwidth_to_halfwidth", "--device=cpu", "--max_seq_length=64", "--doc_stride=16",
             "--max_query_length=16"])
setup = prediction.load_for_prediction(2, "reading comprehension")
print(json.dumps({"attention": setup.model.config.attention, "fullwidth": setup.tokenizer.fullwidth_to_halfwidth}))
"""


def test_predict_mode_builds_the_model_and_tokenizer_its_flags_ask_for(tmp_path):
    proc = subprocess.run([sys.executable, "-c", PREDICT_SETUP, str(tmp_path / "model")], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"attention": "eager", "fullwidth": True}
