"""cnbert-mrc end to end on CPU: it learns on real CMRC 2018 data, two DDP processes match one,
bad flags fail up front, and predict mode answers with the saved model."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, data_file
from model_helpers import random_sibert_variables, sibert_setting_txt, write_tf_checkpoint

import cnbert
from cnbert.config import BertConfig
from cnbert.data import FeatureConfig, build_features, postprocess_predictions, read_cmrc2018
from cnbert.eval import evaluate_cjrc
from cnbert.eval.cmrc_metric import evaluate_cmrc
from cnbert.torch import backend
from cnbert.training import TrainingConfig

TINY = {"model_type": "bert", "vocab_size": 21128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 128, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0}
SIZES = ["--max_seq_length=128", "--doc_stride=64", "--max_query_length=32"]


def run_cli(args, torchrun_procs=0, check=True, script=None, module="cnbert.runners.mrc"):
    """The runner `module` (cnbert-mrc by default) with `args`, under torchrun when `torchrun_procs`;
    `script`: a Python file that runs the runner instead of `-m module`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    program = [str(script)] if script else ["-m", module]
    if torchrun_procs:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun_procs}",
               *program]
    else:
        cmd = [sys.executable, *program]
    proc = subprocess.run(cmd + ["--noprogress", "--device=cpu"] + args, capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}")
    return proc


def patched_runner(directory, *patches):
    """A script for run_cli(script=...): runs cnbert-mrc after `patches` (Python source) have replaced
    some of its parts, to slow down or break steps of a real run."""
    script = directory / "patched_runner.py"
    script.write_text("\n".join(textwrap.dedent(patch) for patch in patches)
                      + "\nfrom cnbert.runners import mrc\n\nmrc.run()\n")
    return script


# every best-model save takes 3 s longer, as a large checkpoint's does
SLOW_SAVE = """
    import time

    from cnbert.torch import backend

    save = backend.save_pretrained

    def slow_save(*args, **kwargs):
        time.sleep(3)
        save(*args, **kwargs)

    backend.save_pretrained = slow_save
"""
# seed 456's training loss is NaN at every step
NAN_FOR_SEED_456 = """
    from cnbert.training import TrainingRun

    check_loss = TrainingRun.check_loss

    def nan_for_seed_456(self, step, loss):
        return check_loss(self, step, float("nan") if self.config.seed == 456 else loss)

    TrainingRun.check_loss = nan_for_seed_456
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny_bert_config.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def cmrc_slice(tmp_path_factory):
    """The first 10 passages (44 questions) of the real CMRC 2018 training set."""
    data = json.loads(data_file("cmrc2018/cmrc2018_train.json").read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("data") / "cmrc_slice.json"
    path.write_text(json.dumps({"version": data["version"], "data": data["data"][:10]}, ensure_ascii=False),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory):
    """A tiny randomly initialised span model saved as a checkpoint, so that both frameworks start
    from exactly the same weights, task head included."""
    directory = tmp_path_factory.mktemp("init") / "tiny_span_model"
    torch.manual_seed(0)
    model, _ = backend.create_model("cmrc2018", BertConfig.from_dict(TINY))
    backend.save_pretrained(model, directory, REPO / "cnbert" / "resources" / "vocab.txt")
    return directory


def checkpoint_f1(model_dir, data_path):
    """Training-slice F1 of the model in `model_dir`, computed in-process without the runner."""
    from cnbert.tokenization import ChineseBertTokenizer

    examples = read_cmrc2018(data_path).examples
    features = build_features(examples, ChineseBertTokenizer(), FeatureConfig(128, 32, 64), training=False)
    model = backend.load_finetuned(model_dir, "cmrc2018")
    out = backend.Trainer(model, TrainingConfig(), "cmrc2018", show_progress=False).predict(features.model_arrays())
    answers = postprocess_predictions(examples, features, out["start_logits"], out["end_logits"]).answers
    return evaluate_cmrc(json.loads(Path(data_path).read_text(encoding="utf-8")), answers)["F1"]


TRAINING = ["--num_train_epochs=12", "--train_batch_size=16", "--learning_rate=5e-3", "--warmup_proportion=0.1",
            "--eval_every=0.5", "--seeds=123"]
_runs = {}


def fine_tune(framework, tmp_path_factory, init_checkpoint, cmrc_slice):
    """One cnbert-mrc training run per framework, shared by the tests below."""
    if framework not in _runs:
        out = tmp_path_factory.mktemp(f"run_{framework}") / "out"
        proc = run_cli(["--task=cmrc2018", f"--framework={framework}", f"--init_checkpoint={init_checkpoint}",
                        f"--train_file={cmrc_slice}", f"--dev_file={cmrc_slice}", f"--output_dir={out}", *SIZES,
                        *TRAINING])
        _runs[framework] = out, proc
    return _runs[framework]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, init_checkpoint, cmrc_slice):
    return fine_tune("torch", tmp_path_factory, init_checkpoint, cmrc_slice)


def losses_of(out):
    history = json.loads((out / "seed_123" / "training_history.json").read_text())
    return [loss for _, loss in history["losses"]]


@pytest.mark.data
@pytest.mark.slow
def test_fine_tuning_on_real_cmrc_data_lowers_the_loss_and_lifts_training_f1(trained_run, init_checkpoint,
                                                                            cmrc_slice):
    out, proc = trained_run
    assert "freshly initialised" not in proc.stdout  # the checkpoint has its span head
    losses = losses_of(out)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    report = json.loads((out / "report.json").read_text())
    before = checkpoint_f1(init_checkpoint, cmrc_slice)
    assert before < 25.0, before
    assert report["seeds"]["123"]["F1"] > before + 30.0
    # the saved artefacts agree with each other
    eval_results = json.loads((out / "seed_123" / "eval_results.json").read_text())
    assert eval_results["F1"] == pytest.approx(report["seeds"]["123"]["F1"])
    assert checkpoint_f1(out / "seed_123" / "best_model", cmrc_slice) == pytest.approx(eval_results["F1"])
    predictions = json.loads((out / "seed_123" / "predictions.json").read_text(encoding="utf-8"))
    gold = json.loads(cmrc_slice.read_text(encoding="utf-8"))
    assert evaluate_cmrc(gold, predictions)["F1"] == pytest.approx(eval_results["F1"])
    assert "| mean (max) |" in (out / "report.md").read_text()
    flags_file = (out / "flags.txt").read_text()
    assert "--learning_rate=0.005" in flags_file and "--seeds=123" in flags_file
    assert list((out / "seed_123" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.data
@pytest.mark.slow
def test_predict_mode_cuts_windows_as_the_training_run_did(trained_run, cmrc_slice, tmp_path):
    # No window flags given: predict mode takes the training run's (128 / 64 / 32, not the defaults
    # 512 / 128 / 64, which this 128-position model could not even take), and answers as in training.
    out, _ = trained_run
    for stale in ("test_results.json", "class_scores.json"):  # as if a training run's test/ (CJRC) were here
        (tmp_path / stale).write_text("{}")
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={out / 'seed_123' / 'best_model'}",
                    f"--predict_file={cmrc_slice}", f"--output_dir={tmp_path}", "--overwrite_output_dir"])
    assert "--max_seq_length=128, --doc_stride=64, --max_query_length=32" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nbest_predictions.json", "predictions.json"]
    assert json.loads((tmp_path / "predictions.json").read_text(encoding="utf-8")) == \
        json.loads((out / "seed_123" / "predictions.json").read_text(encoding="utf-8"))
    # a flag given on the command line wins
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={out / 'seed_123' / 'best_model'}",
                    "--max_seq_length=112", "--question=谁？", "--context=范廷颂是越南罗马天主教枢机。"])
    assert "--max_seq_length" not in proc.stdout.split("as in training")[1].splitlines()[0]


@pytest.mark.data
@pytest.mark.slow
def test_tensorflow_run_learns_like_the_pytorch_run_from_the_same_weights(trained_run, tmp_path_factory,
                                                                         init_checkpoint, cmrc_slice):
    """--framework=tf on the same data, flags and initial weights (dropout off): it learns, and lands
    near the PyTorch run. Both compute the same steps up to float rounding; at this learning rate
    training is chaotic (the training-slice F1 dips to near 0 and recovers), so the rounding
    differences grow after some 70 steps. Measured on CPU: per-step losses within 1e-5 for the first
    60 steps, 0.45 at worst later; best F1 56.82 (PyTorch) vs 56.78 (TF), same EM. Asserted: 1e-4
    over the first 60 steps, best F1 and EM within 10 points."""
    torch_out, _ = trained_run
    tf_out, _ = fine_tune("tf", tmp_path_factory, init_checkpoint, cmrc_slice)
    tf_losses, torch_losses = losses_of(tf_out), losses_of(torch_out)
    assert len(tf_losses) == len(torch_losses)
    assert np.mean(tf_losses[-5:]) < 0.5 * np.mean(tf_losses[:5])
    np.testing.assert_allclose(tf_losses[:60], torch_losses[:60], atol=1e-4, rtol=0)
    tf_best = json.loads((tf_out / "report.json").read_text())["seeds"]["123"]
    torch_best = json.loads((torch_out / "report.json").read_text())["seeds"]["123"]
    assert tf_best["F1"] > checkpoint_f1(init_checkpoint, cmrc_slice) + 30.0
    assert abs(tf_best["F1"] - torch_best["F1"]) <= 10.0 and abs(tf_best["EM"] - torch_best["EM"]) <= 10.0
    # the TF run saved a directory the PyTorch side reads
    assert checkpoint_f1(tf_out / "seed_123" / "best_model", cmrc_slice) == pytest.approx(tf_best["F1"], abs=1e-6)
    # and TF predict mode answers with it exactly as during training
    answers = tmp_path_factory.mktemp("tf_predict")
    run_cli(["--mode=predict", "--framework=tf", "--task=cmrc2018", f"--model_dir={tf_out / 'seed_123' / 'best_model'}",
             *SIZES, f"--predict_file={cmrc_slice}", f"--output_dir={answers}"])
    assert json.loads((answers / "predictions.json").read_text(encoding="utf-8")) == \
        json.loads((tf_out / "seed_123" / "predictions.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_config):
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    common = ["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}",
              f"--dev_file={sample}", *SIZES, "--num_train_epochs=2", "--train_batch_size=8",
              "--learning_rate=2e-3", "--eval_every=0.5", "--seeds=123"]
    run_cli(common + [f"--output_dir={tmp_path / 'one'}"])
    run_cli(common + [f"--output_dir={tmp_path / 'two'}"], torchrun_procs=2)
    one = json.loads((tmp_path / "one" / "seed_123" / "training_history.json").read_text())
    two = json.loads((tmp_path / "two" / "seed_123" / "training_history.json").read_text())
    # what trained each seed is recorded, and reported
    assert one["environment"] == {**two["environment"], "replicas": 1}
    assert two["environment"] == {"cnbert": cnbert.__version__, "framework": f"torch {torch.__version__}",
                                  "device": "CPU", "replicas": 2}
    assert f"Trained with cnbert {cnbert.__version__}, torch {torch.__version__}, 2 replicas on CPU." in \
        (tmp_path / "two" / "report.md").read_text()
    # float reduction order differs between one and two processes, nothing else
    np.testing.assert_allclose([l for _, l in two["losses"]], [l for _, l in one["losses"]], rtol=1e-4)
    assert len(one["evaluations"]) == len(two["evaluations"]) >= 2
    for a, b in zip(one["evaluations"], two["evaluations"]):
        assert (a["step"], a["TOTAL"]) == (b["step"], b["TOTAL"])
        assert a["F1"] == pytest.approx(b["F1"], abs=1e-6) and a["EM"] == pytest.approx(b["EM"], abs=1e-6)
    reports = [json.loads((tmp_path / run / "report.json").read_text()) for run in ("one", "two")]
    assert reports[1]["seeds"] == reports[0]["seeds"]
    questions = len(read_cmrc2018(sample).examples)  # dev is the training file: every question was trained on
    assert reports[0]["seen_in_training"] == {"dev": {"seen": questions, "of": questions}}


@pytest.mark.slow
def test_ddp_test_scoring_waits_for_the_best_model_being_saved(tmp_path, tiny_config):
    """--do_predict under two processes: only rank 0 saves best_model, so rank 1 must wait for the save
    before it loads the model to score the test file. A save slowed down by 3 s (a large checkpoint)
    would otherwise let rank 1 read no model, or the previous best one."""
    script = patched_runner(tmp_path, SLOW_SAVE)
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    out = tmp_path / "out"
    run_cli(["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}", f"--dev_file={sample}",
             *SIZES, "--num_train_epochs=1", "--train_batch_size=8", "--learning_rate=2e-3", "--seeds=123",
             "--do_predict", f"--test_file={sample}", f"--output_dir={out}"], torchrun_procs=2, script=script)
    # the test file is the dev file: the best model must reproduce its best dev scores
    best = json.loads((out / "report.json").read_text())["seeds"]["123"]
    test_results = json.loads((out / "test" / "test_results.json").read_text())
    assert (test_results["F1"], test_results["EM"]) == pytest.approx((best["F1"], best["EM"]))


def test_a_diverging_seed_stops_alone_and_the_report_names_it(tmp_path, tiny_config):
    """Seed 456's loss is NaN from the first step (patched in): after 5 such steps that seed stops,
    seed 123 still trains, the report covers seed 123 and names 456, and the exit status is 1."""
    script = patched_runner(tmp_path, NAN_FOR_SEED_456)
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    out = tmp_path / "out"
    proc = run_cli(["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}",
                    f"--dev_file={sample}", *SIZES, "--num_train_epochs=1", "--train_batch_size=4",
                    "--seeds=456,123", f"--output_dir={out}"], check=False, script=script)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "seed(s) 456 stopped before the end of training" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert list(report["seeds"]) == ["123"] and report["best_seed"] == 123
    assert "5 consecutive steps" in report["stopped_seeds"]["456"]
    assert "- 456: training loss was NaN/inf for 5 consecutive steps" in (out / "report.md").read_text()
    history = json.loads((out / "seed_456" / "training_history.json").read_text())
    # steps 1 to 4 went on (their real losses recorded); the fifth non-finite step stopped the seed,
    # and is recorded too
    assert [step for step, _ in history["losses"]] == [1, 2, 3, 4, 5] and "5 consecutive" in history["stopped"]


@pytest.mark.slow
def test_under_torchrun_a_diverging_seed_leaves_rank_0_time_to_write_the_others_outputs(tmp_path, tiny_config):
    """As above under two processes, with every best-model save slowed down by 3 s (a large
    checkpoint): every process stops on the diverged seed, and the others wait for rank 0, the one
    writing, to save seed 123's last best model and the report, rather than exit first and have
    torchrun kill it mid-write. The notes (random initialisation, dev = train) come once, from rank 0."""
    script = patched_runner(tmp_path, NAN_FOR_SEED_456, SLOW_SAVE)
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    out = tmp_path / "out"
    proc = run_cli(["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}",
                    f"--dev_file={sample}", *SIZES, "--num_train_epochs=1", "--train_batch_size=8",
                    "--seeds=456,123", f"--output_dir={out}"], torchrun_procs=2, check=False, script=script)
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert list(report["seeds"]) == ["123"] and "456" in report["stopped_seeds"]
    assert (out / "report.md").is_file() and (out / "seed_123" / "training_history.json").is_file()
    assert (out / "seed_123" / "best_model" / "config.json").is_file() and not list(out.rglob(".staged-*"))
    assert proc.stderr.count("seed(s) 456 stopped before the end of training") == 2  # one per process
    assert proc.stdout.count("RANDOMLY INITIALISED") == 1
    assert proc.stdout.count("WARNING: --dev_file is --train_file") == 1


def test_the_best_seed_is_the_highest_f1_plus_em_and_its_model_scores_the_test_file(tmp_path, tiny_config):
    """Dev scores patched in per seed: 123 gets F1 60 + EM 30 = 90, 456 gets 70 + 35 = 105 and 789
    gets 75 + 10 = 85 (the best F1 alone, the worst sum). The report must name 456, the seed with
    the highest F1 + EM (neither the lowest nor the best F1), and --do_predict must score the test
    file with seed 456's saved model (the test scoring itself runs unpatched)."""
    script = patched_runner(tmp_path, """
        from cnbert.runners import mrc

        SCORES = {123: (60.0, 30.0), 456: (70.0, 35.0), 789: (75.0, 10.0)}
        predict_examples = mrc._predict_examples

        def fixed_dev_scores(trainer, *args, **kwargs):
            predictions, metrics = predict_examples(trainer, *args, **kwargs)
            if trainer.config.seed in SCORES:
                metrics["F1"], metrics["EM"] = SCORES[trainer.config.seed]
            return predictions, metrics

        mrc._predict_examples = fixed_dev_scores
    """)
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    out = tmp_path / "out"
    run_cli(["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}", f"--dev_file={sample}",
             *SIZES, "--num_train_epochs=1", "--train_batch_size=8", "--learning_rate=2e-3",
             "--seeds=123,456,789", "--do_predict", f"--test_file={sample}", f"--output_dir={out}"], script=script)
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"]["456"] == {"F1": 70.0, "EM": 35.0} and report["best_seed"] == 456
    test_results = json.loads((out / "test" / "test_results.json").read_text())
    assert Path(test_results["model_dir"]) == out / "seed_456" / "best_model"

    def top_probabilities(directory):  # per question, in id order: the probability of its best answer
        nbest = json.loads((directory / "nbest_predictions.json").read_text(encoding="utf-8"))
        return np.array([nbest[qas_id][0]["probability"] for qas_id in sorted(nbest)])

    # the test file is the dev file: seed 456's model gives its dev answers again (the seeds' models differ)
    assert json.loads((out / "test" / "predictions.json").read_text(encoding="utf-8")) == \
        json.loads((out / "seed_456" / "predictions.json").read_text(encoding="utf-8"))
    np.testing.assert_allclose(top_probabilities(out / "test"), top_probabilities(out / "seed_456"), rtol=0, atol=1e-6)
    assert np.abs(top_probabilities(out / "seed_123") - top_probabilities(out / "seed_456")).max() > 1e-4
    assert np.abs(top_probabilities(out / "seed_789") - top_probabilities(out / "seed_456")).max() > 1e-4


def test_training_history_writes_non_finite_losses_as_null():
    from cnbert.runners.training_run import training_history
    from cnbert.training import FitResult

    history = training_history(FitResult(None, None, [{"step": 2, "F1": 1.0}], [(1, 0.5), (2, float("nan")),
                                                                                 (3, float("inf"))]),
                               {"environment": {"replicas": 1}, "data": {"train": "a", "dev": "b"}})
    assert history["losses"] == [(1, 0.5), (2, None), (3, None)] and history["environment"] == {"replicas": 1}
    assert history["data"] == {"train": "a", "dev": "b"}
    json.dumps(history, allow_nan=False)


@pytest.mark.parametrize("extra, message", [
    (["--doc_stride=200"], "doc_stride"),
    (["--train_batch_size=2", "--gradient_accumulation_steps=4"], "--train_batch_size=2 cannot be split over 1 "
                                                                    "process(es) x 4 accumulation steps"),
    (["--seeds=123,-1"], "--seeds must be in [0, 2147483648), got [123, -1]"),
    (["--init_seed=5000000000"], "--init_seed must be in [0, 2147483648)"),
    (["--cjrc_dev_fraction=0"], "--cjrc_dev_fraction must be in (0, 1), got 0.0"),
    (["--cjrc_dev_fraction=1.5"], "--cjrc_dev_fraction must be in (0, 1), got 1.5"),
    (["--max_seq_length=256", "--doc_stride=64"], "exceeds the model's max_position_embeddings=128"),
    (["--seeds=1,x"], "--seeds must be integers"),
    (["--train_file=/nonexistent.json"], "--train_file=/nonexistent.json: no such file"),
    (["--learning_rate=-1"], "learning_rate must be > 0"),
    (["--framework=mxnet"], "framework"),
])
def test_bad_flags_fail_before_any_work(tmp_path, tiny_config, extra, message):
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    args = ["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}", f"--dev_file={sample}",
            f"--output_dir={tmp_path / 'out'}", "--max_seq_length=128", "--max_query_length=32", "--doc_stride=64"]
    proc = run_cli(args + extra, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_this_runs_outputs_and_keeps_other_files(tmp_path, tiny_config):
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    out = tmp_path / "out"
    stale_events = out / "seed_123" / "tensorboard" / "events.out.tfevents.earlier"
    stale_events.parent.mkdir(parents=True)
    stale_events.write_text("an earlier run's curves")
    (out / "test").mkdir()
    (out / "test" / "predictions.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    run_cli(["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}", f"--dev_file={sample}",
             *SIZES, "--num_train_epochs=1", "--train_batch_size=8", "--seeds=123", f"--output_dir={out}",
             "--overwrite_output_dir"])
    assert not stale_events.exists() and not (out / "test").exists()
    assert list((out / "seed_123" / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "notes.txt").read_text() == "mine"


def test_predict_mode_refuses_windows_longer_than_the_model_takes(init_checkpoint):
    # the model has 128 positions; the default --max_seq_length is 512
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={init_checkpoint}", "--question=谁？",
                    "--context=范廷颂是越南罗马天主教枢机。"], check=False)
    assert proc.returncode != 0
    assert "--max_seq_length=512 exceeds the model's max_position_embeddings=128" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_non_empty_output_dir_and_checkpoint_without_vocab_are_refused(tmp_path, tiny_config):
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    args = ["--task=cmrc2018", f"--train_file={sample}", f"--dev_file={sample}", f"--output_dir={out}", *SIZES]
    proc = run_cli(args + [f"--bert_config_file={tiny_config}"], check=False)
    assert proc.returncode != 0 and "is not empty; pass --overwrite_output_dir" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]

    checkpoint = tmp_path / "ckpt"
    torch.manual_seed(0)
    model, _ = backend.create_model("cmrc2018", BertConfig.from_dict(TINY))
    backend.save_pretrained(model, checkpoint, REPO / "cnbert" / "resources" / "vocab.txt")
    (checkpoint / "vocab.txt").unlink()
    proc = run_cli(args + [f"--init_checkpoint={checkpoint}", "--overwrite_output_dir"], check=False)
    assert proc.returncode != 0 and "has no vocab.txt; pass --vocab_file" in proc.stderr


def _slice(source_relative, tmp_path, articles):
    data = json.loads(data_file(source_relative).read_text(encoding="utf-8"))
    path = tmp_path / Path(source_relative).name
    path.write_text(json.dumps({**data, "data": data["data"][:articles]}, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.data
def test_drcd_run_answers_in_the_original_traditional_text(tmp_path, tiny_config):
    drcd = _slice("drcd/DRCD_dev.json", tmp_path, 2)
    out = tmp_path / "out"
    run_cli(["--task=drcd", f"--bert_config_file={tiny_config}", f"--train_file={drcd}", f"--dev_file={drcd}",
             f"--output_dir={out}", *SIZES, "--num_train_epochs=1", "--train_batch_size=16", "--learning_rate=1e-3",
             "--seeds=123,456", "--do_predict", f"--test_file={drcd}"])
    predictions = json.loads((out / "seed_123" / "predictions.json").read_text(encoding="utf-8"))
    gold = json.loads(drcd.read_text(encoding="utf-8"))
    contexts = {qa["id"]: p["context"] for a in gold["data"] for p in a["paragraphs"] for qa in p["qas"]}
    assert set(predictions) == set(contexts)
    # answers are slices of the traditional passage, not of the simplified text the model read
    assert all(answer in contexts[qid] for qid, answer in predictions.items())
    scored = json.loads((out / "seed_123" / "eval_results.json").read_text())
    assert scored["TOTAL"] == len(contexts) and scored["SKIP"] == 0
    # --do_predict answered the test file once with the best seed's best model; the test file is
    # the dev file here, so it must reproduce that seed's best dev scores exactly
    report = json.loads((out / "report.json").read_text())
    best = report["seeds"][str(report["best_seed"])]
    test_results = json.loads((out / "test" / "test_results.json").read_text())
    assert test_results["model_dir"].endswith(f"seed_{report['best_seed']}/best_model")
    assert (test_results["F1"], test_results["EM"]) == pytest.approx((best["F1"], best["EM"]))
    # one --question / --context is read as the file's questions are (the model reads simplified
    # Chinese), so the best model answers it as it answered that question in the test file
    test_answers = json.loads((out / "test" / "predictions.json").read_text(encoding="utf-8"))
    for qa, context in [(p["qas"][0], p["context"]) for p in gold["data"][0]["paragraphs"][:2]]:
        proc = run_cli(["--mode=predict", "--task=drcd", f"--model_dir={test_results['model_dir']}",
                        f"--question={qa['question']}", f"--context={context}"])
        assert json.loads(proc.stdout.strip().splitlines()[-1])["answer"] == test_answers[qa["id"]]
    # the task is saved with the model: a DRCD model is not run as a CMRC 2018 one, which would
    # give it traditional text unconverted
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={test_results['model_dir']}",
                    f"--question={qa['question']}", f"--context={context}"], check=False)
    assert proc.returncode == 2 and "was fine-tuned on --task=drcd, not --task=cmrc2018" in proc.stderr


@pytest.mark.data
@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_cjrc_run_holds_out_passages_and_scores_with_the_cjrc_metric(tmp_path, tiny_config, framework):
    cjrc = _slice("cjrc/dev_ground_truth.json", tmp_path, 20)
    out = tmp_path / "out"
    run_cli([f"--framework={framework}", "--task=cjrc", f"--bert_config_file={tiny_config}", f"--train_file={cjrc}",
             "--cjrc_dev_fraction=0.2",
             f"--output_dir={out}", *SIZES, "--num_train_epochs=1", "--train_batch_size=16", "--learning_rate=1e-3"])
    gold = json.loads(cjrc.read_text(encoding="utf-8"))
    all_ids = [qa["id"] for a in gold["data"] for p in a["paragraphs"] for qa in p["qas"]]
    written = json.loads((out / "seed_123" / "predictions.json").read_text(encoding="utf-8"))
    # the official CJRC evaluate.py reads only a list: `for pred in preds: pred_dict[pred['id']] = pred['answer']`
    assert isinstance(written, list) and all(set(entry) == {"id", "answer"} for entry in written)
    predictions = {entry["id"]: entry["answer"] for entry in written}
    # 20 documents, 4 held out (6 questions each in this file): dev is a fifth of the questions
    assert len(predictions) == len(written) == len(all_ids) // 5 and set(predictions) <= set(all_ids)
    results = json.loads((out / "seed_123" / "eval_results.json").read_text())
    assert results["TOTAL"] == len(predictions)
    report = json.loads((out / "report.json").read_text())  # per domain too, as the official scorer reports
    assert report["metrics"] == ["F1", "EM", "civil_F1", "civil_EM", "criminal_F1", "criminal_EM"]
    assert report["seeds"]["123"] == {name: results[name] for name in report["metrics"]}
    assert report["seen_in_training"] == {"dev": {"seen": 0, "of": len(predictions)}}  # held out by passage
    # the held-out questions' gold, which cnbert-score needs to reproduce the run's dev scores
    held_out = json.loads((out / "dev_gold.json").read_text(encoding="utf-8"))
    rescored = evaluate_cjrc(held_out, predictions)["overall"]
    assert rescored["qas"] == len(predictions) and rescored["f1"] == pytest.approx(results["F1"])
    assert {"F1", "EM"} <= set(results) and any(k.endswith("_F1") for k in results)
    domains = [k[:-len("_TOTAL")] for k in results if k.endswith("_TOTAL")]
    assert domains and sum(results[f"{d}_TOTAL"] for d in domains) == results["TOTAL"]
    if framework == "torch":
        # questions to answer need no domain (only the scorer reports by it), nor answers
        questions = tmp_path / "questions.json"
        questions.write_text(json.dumps({"data": [{"paragraphs": [{"context": p["context"], "qas": [
            {"id": qa["id"], "question": qa["question"]} for qa in p["qas"]]} for p in a["paragraphs"]]}
            for a in gold["data"][:2]]}, ensure_ascii=False), encoding="utf-8")
        run_cli(["--mode=predict", "--task=cjrc", f"--model_dir={out / 'seed_123' / 'best_model'}",
                 f"--predict_file={questions}", f"--output_dir={tmp_path / 'answers'}"])
        answered = json.loads((tmp_path / "answers" / "predictions.json").read_text(encoding="utf-8"))
        assert [entry["id"] for entry in answered] == all_ids[:len(answered)] and len(answered) == 12
    nbest = json.loads((out / "seed_123" / "nbest_predictions.json").read_text(encoding="utf-8"))
    assert set(nbest) == set(predictions)
    class_scores = json.loads((out / "seed_123" / "class_scores.json").read_text(encoding="utf-8"))
    assert set(class_scores) == set(predictions)
    kinds = {"span": None, "yes": "YES", "no": "NO", "unknown": ""}
    assert all(kinds[scores["answer_kind"]] in (None, predictions[qas_id]) for qas_id, scores in class_scores.items())


@pytest.mark.data
@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_resume_of_a_cjrc_run_writes_the_held_out_gold_again_and_retrains_as_before(tmp_path, tiny_config, framework):
    cjrc = _slice("cjrc/dev_ground_truth.json", tmp_path, 10)
    out, resumed = tmp_path / "out", tmp_path / "resumed"
    flags = [f"--framework={framework}", "--task=cjrc", f"--bert_config_file={tiny_config}", f"--train_file={cjrc}",
             "--cjrc_dev_fraction=0.2", *SIZES, "--num_train_epochs=1", "--train_batch_size=16",
             "--learning_rate=1e-3", "--seeds=123,456"]
    run_cli(flags + [f"--output_dir={out}"])
    shutil.copytree(out, resumed)
    # interrupted while seed 456 trained: no history of it, no report; dev_gold.json is written again
    (resumed / "seed_456" / "training_history.json").unlink()
    for name in ("report.md", "report.json", "dev_gold.json"):
        (resumed / name).unlink()
    proc = run_cli(flags + [f"--output_dir={resumed}", "--resume"])
    assert "seed 123: finished in the interrupted run (--resume)" in proc.stdout
    assert "seed 456: best dev at step" in proc.stdout
    for name in ("dev_gold.json", "report.md", "seed_456/training_history.json", "seed_456/eval_results.json"):
        assert (resumed / name).read_text(encoding="utf-8") == (out / name).read_text(encoding="utf-8"), name
    environment = json.loads((out / "seed_456" / "training_history.json").read_text())["environment"]
    assert environment["framework"].split()[0] == {"torch": "torch", "tf": "tensorflow"}[framework]
    assert (environment["device"], environment["replicas"]) == ("CPU", 1)


@pytest.mark.slow
def test_ctrl_c_leaves_only_complete_files(tmp_path, tiny_config):
    """SIGINT in the middle of training: the run stops, and every file it left is whole (outputs are
    written to temporary names and renamed)."""
    import signal
    import time

    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "cnbert.runners.mrc", "--noprogress", "--device=cpu",
                             "--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}",
                             f"--dev_file={sample}", f"--output_dir={out}", *SIZES, "--num_train_epochs=200",
                             "--train_batch_size=8", "--eval_every=1", "--seeds=123"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "seed_123" / "best_model").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # land somewhere inside later evaluations and saves
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "cnbert-mrc: interrupted; every output already written is complete" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    for path in out.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    model = backend.load_finetuned(out / "seed_123" / "best_model", "cmrc2018")
    assert sum(p.numel() for p in model.parameters()) > 0
    # the seed's outputs are one evaluation's: its model (with its settings) answers as predictions.json says
    assert (out / "seed_123" / "best_model" / "cnbert_mrc_settings.json").is_file()
    run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={out / 'seed_123' / 'best_model'}",
             f"--predict_file={sample}", f"--output_dir={tmp_path / 'again'}"])
    assert (tmp_path / "again" / "predictions.json").read_text(encoding="utf-8") == \
        (out / "seed_123" / "predictions.json").read_text(encoding="utf-8")


def fine_tune_on_sample(init_checkpoint, out):
    """One epoch of cmrc2018 from `init_checkpoint` on the committed CMRC 2018 sample (train and dev)."""
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    return run_cli(["--task=cmrc2018", f"--init_checkpoint={init_checkpoint}", f"--train_file={sample}",
                    f"--dev_file={sample}", f"--output_dir={out}", *SIZES, "--num_train_epochs=1",
                    "--train_batch_size=8", "--learning_rate=1e-3"])


def test_runner_fine_tunes_an_albert_checkpoint(tmp_path):
    """An ALBERT directory (Hugging Face layout) goes through the same runner; the fresh span head
    is reported and the saved best model loads back into transformers."""
    import shutil

    import transformers

    config = transformers.AlbertConfig(vocab_size=21128, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                       hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    checkpoint = tmp_path / "albert"
    transformers.AlbertModel(config).save_pretrained(checkpoint)
    shutil.copyfile(REPO / "cnbert" / "resources" / "vocab.txt", checkpoint / "vocab.txt")
    out = tmp_path / "out"
    proc = fine_tune_on_sample(checkpoint, out)
    assert "freshly initialised task head (not in the checkpoint): qa_outputs.weight, qa_outputs.bias" in proc.stdout
    reloaded = transformers.AlbertForQuestionAnswering.from_pretrained(out / "seed_123" / "best_model")
    assert reloaded.config.embedding_size == 16


def test_runner_fine_tunes_a_sibert_checkpoint_with_its_tokenizer(tmp_path):
    """A siBert pretraining checkpoint (a prefix beside setting.txt) goes through the runner: siBert's
    full-width to half-width map is on without a flag, recorded in flags.txt and beside the best model,
    and predict mode takes it from there; the saved model keeps siBert's activation."""
    settings = {"vocab_size": 21128, "hidden_size": 32, "n_layer": 2, "n_head": 2, "mlp_ratio": 2,
                "max_position_embeddings": 128, "type_vocab_size": 2, "dropout": 0.0}
    directory = tmp_path / "SiBertV0"  # as its pretraining leaves it: several checkpoints, one setting.txt
    for step in (5000, 6000):
        write_tf_checkpoint(directory, random_sibert_variables(settings, seed=step), sibert_setting_txt(settings),
                            f"model.ckpt-{step}", "setting.txt")
    out = tmp_path / "out"
    proc = fine_tune_on_sample(directory / "model.ckpt-6000", out)
    assert "siBert checkpoint: full-width characters are mapped to half-width before WordPiece" in proc.stdout
    assert "--fullwidth_to_halfwidth\n" in (out / "flags.txt").read_text()
    best = out / "seed_123" / "best_model"
    assert json.loads((best / "cnbert_mrc_settings.json").read_text())["fullwidth_to_halfwidth"] is True
    assert json.loads((best / "config.json").read_text())["hidden_act"] == "quick_gelu"
    proc = run_cli(["--mode=predict", "--task=cmrc2018", f"--model_dir={best}", "--question=ＣＭＲＣ是什么？",
                    "--context=ＣＭＲＣ２０１８是中文阅读理解评测。"])
    assert "--fullwidth_to_halfwidth=True" in proc.stdout.split("as in training")[1].splitlines()[0]
    # fine-tuned again from the saved model, which no longer looks like siBert's checkpoint: the map
    # stays on, as its training settings say
    again = tmp_path / "again"
    proc = fine_tune_on_sample(best, again)
    assert "--init_checkpoint was fine-tuned with full-width characters mapped to half-width " \
           "(cnbert_mrc_settings.json)" in proc.stdout
    assert json.loads((again / "seed_123" / "best_model" / "cnbert_mrc_settings.json").read_text()
                      )["fullwidth_to_halfwidth"] is True


def test_a_checkpoint_that_does_not_fit_fails_before_any_data_is_read(tmp_path, init_checkpoint):
    """A config edited to hidden_size 66 no longer fits the saved 64-wide weights: the runner says
    which tensor and both shapes, exits 1 without a traceback, before reading the (missing!) data,
    and leaves no output directory behind."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(init_checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "hidden_size": 66}))
    missing_data = tmp_path / "train.json"
    missing_data.write_text("{not json", encoding="utf-8")  # would be a DataError if it were read
    out = tmp_path / "out"
    proc = run_cli(["--task=cmrc2018", f"--init_checkpoint={broken}", f"--train_file={missing_data}",
                    f"--dev_file={missing_data}", f"--output_dir={out}", *SIZES], check=False)
    assert proc.returncode == 1
    assert "cnbert-mrc: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "bert.embeddings.word_embeddings.weight: the checkpoint has shape (21128, 64) but the model expects " \
           "(21128, 66)" in proc.stderr
    assert not out.exists()


def test_the_test_file_is_scored_against_its_own_answers_and_every_decoding_setting_is_saved(tmp_path, tiny_config):
    sample = REPO / "tests" / "fixtures" / "mrc_cmrc2018_sample.json"
    data = json.loads(sample.read_text(encoding="utf-8"))
    test = tmp_path / "test.json"  # the first article alone: 5 of the sample's 23 questions
    article, paragraph = data["data"][0], data["data"][0]["paragraphs"][-1]
    new_qa = paragraph["qas"][-1]
    new_qa["question"] += "请回答"  # a new question on a training passage: not one the model trained on
    test.write_text(json.dumps({**data, "data": data["data"][:1]}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    run_cli(["--task=cmrc2018", f"--bert_config_file={tiny_config}", f"--train_file={sample}", f"--dev_file={sample}",
             *SIZES, "--num_train_epochs=1", "--train_batch_size=8", "--seeds=123", "--max_answer_length=17",
             "--do_predict", f"--test_file={test}", f"--output_dir={out}"])
    results = json.loads((out / "test" / "test_results.json").read_text())
    assert results["TOTAL"] == 5 and results["SKIP"] == 0
    # the same question on the same passage was trained on; dev is the training file
    assert json.loads((out / "report.json").read_text())["seen_in_training"] == {"dev": {"seen": 23, "of": 23},
                                                                                 "test": {"seen": 4, "of": 5}}
    answer = json.loads((out / "test" / "predictions.json").read_text(encoding="utf-8"))[new_qa["id"]]
    only_new = {**data, "data": [{**article, "paragraphs": [{**paragraph, "qas": [new_qa]}]}]}
    alone = evaluate_cmrc(only_new, {new_qa["id"]: answer})  # the new question alone
    assert results["unseen"] == {"examples": 1, **alone}
    settings = json.loads((out / "seed_123" / "best_model" / "cnbert_mrc_settings.json").read_text())
    assert settings == {"task": "cmrc2018", "max_seq_length": 128, "doc_stride": 64, "max_query_length": 32,
                        "max_answer_length": 17, "do_lower_case": True, "fullwidth_to_halfwidth": False,
                        "n_best_size": 20, "null_score_threshold": 0.0}
