"""cnbert-classify end to end, in subprocesses (it and cnbert-mrc both define --task on absl's global
flags, so neither is imported here): fine-tuning a tiny random BERT on slices of the real
ChnSentiCorp and LCQMC files, the saved artefacts agreeing with each other and with the gold
labels, predict mode reproducing the run, and bad input refused before training."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import data_file
from test_mrc_runner import run_cli as run_runner

TINY = {"model_type": "bert", "vocab_size": 21128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 128}


def run_cli(args, check=True):
    return run_runner(args, check=check, module="cnbert.runners.classify")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny_bert_config.json"
    path.write_text(json.dumps(TINY))
    return path


def head_of(relative, lines, directory, name):
    """The header and the first `lines` records of a real data file, as a file in `directory`."""
    text = data_file(relative).read_text(encoding="utf-8").split("\n")
    path = directory / name
    path.write_text("\n".join(text[:lines + 1]) + "\n", encoding="utf-8")
    return path


def read_predictions(path):
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    rows = [line.split("\t") for line in lines[1:]]
    return lines[0].split("\t"), rows


def assert_same_probabilities(rows, expected, atol=1e-6):
    """predictions.tsv rows whose probabilities agree up to float rounding: predict mode batches and
    trims rows as it likes, which may move the last bits of a logit."""
    np.testing.assert_allclose(np.array([r[2:] for r in rows], dtype=float),
                               np.array([r[2:] for r in expected], dtype=float), rtol=0, atol=atol)


def assert_same_predictions(path, expected_path):
    """The same ids and labels, and the same probabilities up to float rounding."""
    header, rows = read_predictions(path)
    expected_header, expected = read_predictions(expected_path)
    assert header == expected_header and [r[:2] for r in rows] == [r[:2] for r in expected]
    assert_same_probabilities(rows, expected)


def gold_labels(path):
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    column = lines[0].split("\t").index("label")
    return {f"{path.name}:{number}": line.split("\t")[column] for number, line in enumerate(lines[1:], start=2)}


def training_flags(directory, tiny_config, out):
    """trained_run's flags, with its train and dev slices in `directory`."""
    train, dev = directory / "train.tsv", directory / "dev.tsv"
    return ["--task=chnsenticorp", f"--bert_config_file={tiny_config}", f"--train_file={train}", f"--dev_file={dev}",
            "--max_seq_length=64", "--num_train_epochs=2", "--train_batch_size=16", "--learning_rate=1e-3",
            "--eval_every=0.5", "--seeds=123,456", "--do_predict", f"--test_file={dev}", f"--output_dir={out}"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_config):
    directory = tmp_path_factory.mktemp("chnsenticorp")
    head_of("chnsenticorp/train.tsv", 64, directory, "train.tsv")
    dev = head_of("chnsenticorp/dev.tsv", 32, directory, "dev.tsv")
    out = directory / "out"
    proc = run_cli(training_flags(directory, tiny_config, out))
    return out, dev, proc


def test_resume_keeps_the_finished_seed_and_trains_the_interrupted_one_again(trained_run, tmp_path, tiny_config):
    out, dev, _ = trained_run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    # as if seed 123 had not finished (its history is written when its training ends), and nothing
    # after it was written: no report, no test scores
    (resumed / "seed_123" / "training_history.json").unlink()
    for name in ("report.md", "report.json"):
        (resumed / name).unlink()
    shutil.rmtree(resumed / "test")
    (resumed / "seed_456" / "kept").write_text("")
    proc = run_cli(training_flags(dev.parent, tiny_config, resumed) + ["--resume"])
    assert "seed 456: finished in the interrupted run (--resume): best dev accuracy" in proc.stdout
    assert f"--resume: removing {resumed / 'seed_123'} of the interrupted run" in proc.stdout
    assert "seed 123: best dev at step" in proc.stdout
    assert (resumed / "seed_456" / "kept").exists()  # seed 456 was not trained again
    # seed 123 trained again from the start gives what it gave in the uninterrupted run (CPU, fp32),
    # and the report lists the seeds in --seeds' order
    assert (resumed / "report.md").read_text() == (out / "report.md").read_text()
    assert (resumed / "seed_123" / "training_history.json").read_text() == \
        (out / "seed_123" / "training_history.json").read_text()
    test_results = [json.loads((run / "test" / "test_results.json").read_text()) for run in (out, resumed)]
    model_dirs = [results.pop("model_dir") for results in test_results]
    assert model_dirs[1] == model_dirs[0].replace(str(out), str(resumed)) and test_results[0] == test_results[1]
    assert "--resume" not in (resumed / "flags.txt").read_text()  # the flag file starts the run again


def test_resume_leaves_a_stopped_seed_stopped(trained_run, tmp_path, tiny_config):
    out, dev, _ = trained_run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    history = json.loads((resumed / "seed_456" / "training_history.json").read_text())
    history["stopped"] = "the loss was nan for 5 steps in a row"
    (resumed / "seed_456" / "training_history.json").write_text(json.dumps(history))
    proc = run_cli(training_flags(dev.parent, tiny_config, resumed) + ["--resume"], check=False)
    assert proc.returncode == 1 and "seed(s) 456 stopped before the end of training" in proc.stderr
    assert "seed 456: stopped in the interrupted run (--resume), not trained again: the loss was nan" in proc.stdout
    report = json.loads((resumed / "report.json").read_text())
    assert list(report["seeds"]) == ["123"] and report["stopped_seeds"] == {"456": history["stopped"]}


def test_resume_on_another_set_up_is_noted_and_the_report_names_each_seeds(trained_run, tmp_path, tiny_config):
    out, dev, _ = trained_run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    history_file = resumed / "seed_456" / "training_history.json"
    history = json.loads(history_file.read_text())
    here = history["environment"]
    assert here["device"] == "CPU" and here["replicas"] == 1 and here["framework"].startswith("torch ")
    elsewhere = {**here, "replicas": 8}  # one field differs
    history_file.write_text(json.dumps({**history, "environment": elsewhere}))
    for name in ("report.md", "report.json"):  # interrupted after both seeds finished
        (resumed / name).unlink()
    proc = run_cli(training_flags(dev.parent, tiny_config, resumed) + ["--resume"])
    described = f"cnbert {here['cnbert']}, {here['framework']}"
    assert (f"NOTE: seed 456 of the interrupted run trained with {described}, 8 replicas on CPU; "
            f"this run trains with {described}, 1 replica on CPU. report.md lists each seed's.") in proc.stdout
    assert (f"The seeds were trained with different set-ups:\n- 123: {described}, 1 replica on CPU\n"
            f"- 456: {described}, 8 replicas on CPU\n") in (resumed / "report.md").read_text()
    assert json.loads((resumed / "report.json").read_text())["environments"] == {"123": here, "456": elsewhere}


def test_resume_refuses_seeds_trained_on_other_examples_and_notes_seeds_that_did_not_record_theirs(
        trained_run, tmp_path, tiny_config):
    out, dev, _ = trained_run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    history_file = resumed / "seed_456" / "training_history.json"
    history = json.loads(history_file.read_text())
    assert set(history["data"]) == {"train", "dev"} and all(len(digest) == 64 for digest in history["data"].values())
    # as if the dev file (or how cnbert reads it) had changed since seed 456 was evaluated
    history_file.write_text(json.dumps({**history, "data": {**history["data"], "dev": "0" * 64}}))
    (resumed / "seed_123" / "training_history.json").unlink()  # interrupted: 123 would be trained again
    proc = run_cli(training_flags(dev.parent, tiny_config, resumed) + ["--resume"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"--resume: seed 456 of the run in {resumed} trained or was evaluated on other examples than these "
            "flags give now") in proc.stderr
    assert (resumed / "seed_123").exists() and "seed 123: best dev" not in proc.stdout  # nothing touched
    # a history from a cnbert that recorded neither the examples nor the set-up: noted, and kept
    shutil.copy(out / "seed_123" / "training_history.json", resumed / "seed_123" / "training_history.json")
    history_file.write_text(json.dumps({key: value for key, value in history.items()
                                        if key not in ("data", "environment")}))
    proc = run_cli(training_flags(dev.parent, tiny_config, resumed) + ["--resume"])
    assert ("NOTE: seed 456 of the interrupted run recorded no digest of its examples (an older cnbert): nothing "
            "shows they are this run's") in proc.stdout
    assert "NOTE: seed 456 of the interrupted run trained with a set-up not recorded (an older cnbert)" in proc.stdout
    assert "- 456: a set-up not recorded (an older cnbert)\n" in (resumed / "report.md").read_text()


def test_resume_refuses_a_run_with_other_flags_before_training(trained_run, tmp_path, tiny_config):
    out, dev, _ = trained_run
    earlier = tmp_path / "earlier"  # a copy: a refusal that failed would retrain into it
    shutil.copytree(out, earlier)
    flags = training_flags(dev.parent, tiny_config, earlier)
    changed = [flag for flag in flags if not flag.startswith(("--do_predict", "--test_file"))]
    proc = run_cli(changed + ["--resume", "--learning_rate=2e-3"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"--resume: the run in {earlier} had other flags (flags.txt): --do_predict there, --nodo_predict now; "
            "--learning_rate=0.001 there, --learning_rate=0.002 now; "
            f"--test_file={dev} there, not given now") in proc.stderr
    proc = run_cli(flags + ["--resume", "--seeds=456,123"], check=False)
    assert proc.returncode == 2 and "trained --seeds=123,456; --seeds=456,123 must start with them" in proc.stderr
    proc = run_cli(flags + ["--resume", "--overwrite_output_dir"], check=False)
    assert proc.returncode == 2 and "--resume keeps the earlier run's finished seeds" in proc.stderr
    proc = run_cli(flags, check=False)  # the folder holds a training run: the refusal offers --resume
    assert proc.returncode == 2 and "pass --overwrite_output_dir to reuse it (or --resume to continue" in proc.stderr
    empty = tmp_path / "empty"
    proc = run_cli(training_flags(dev.parent, tiny_config, empty) + ["--resume"], check=False)
    assert proc.returncode == 2 and f"--resume: {empty / 'flags.txt'} not found" in proc.stderr
    assert (earlier / "report.md").read_text() == (out / "report.md").read_text()


def test_training_writes_a_consistent_report_models_and_predictions(trained_run):
    out, dev, proc = trained_run
    assert "RANDOMLY INITIALISED" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == ["accuracy"] and set(report["seeds"]) == {"123", "456"}
    gold = gold_labels(dev)
    for seed in (123, 456):
        seed_dir = out / f"seed_{seed}"
        eval_results = json.loads((seed_dir / "eval_results.json").read_text())
        assert eval_results["accuracy"] == pytest.approx(report["seeds"][str(seed)]["accuracy"])
        header, rows = read_predictions(seed_dir / "predictions.tsv")
        assert header == ["id", "prediction", "p(0)", "p(1)"] and [r[0] for r in rows] == list(gold)
        probabilities = np.array([[float(p) for p in r[2:]] for r in rows])
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=2e-6)
        assert all(r[1] == "01"[int(np.argmax(p))] for r, p in zip(rows, probabilities))
        # the saved predictions, scored against the gold labels, give the saved accuracy
        correct = sum(gold[r[0]] == r[1] for r in rows)
        assert eval_results["accuracy"] == pytest.approx(100 * correct / len(rows))
        assert eval_results["per_label"]["1"]["gold"] == sum(label == "1" for label in gold.values())
        history = json.loads((seed_dir / "training_history.json").read_text())
        assert [e["step"] for e in history["evaluations"]] == [2, 4, 6, 8]
        config = json.loads((seed_dir / "best_model" / "config.json").read_text())
        assert config["architectures"] == ["BertForSequenceClassification"]
        assert config["id2label"] == {"0": "0", "1": "1"}
        settings = json.loads((seed_dir / "best_model" / "cnbert_classify_settings.json").read_text())
        assert settings == {"task": "chnsenticorp", "max_seq_length": 64, "do_lower_case": True,
                            "fullwidth_to_halfwidth": False}
    # the test file is the dev file: the best seed's model reproduces its best dev accuracy
    test_results = json.loads((out / "test" / "test_results.json").read_text())
    assert test_results["model_dir"] == str(out / f"seed_{report['best_seed']}" / "best_model")
    assert test_results["accuracy"] == pytest.approx(report["seeds"][str(report["best_seed"])]["accuracy"])
    assert "| mean (max) |" in (out / "report.md").read_text()
    flags_file = (out / "flags.txt").read_text()
    assert flags_file.startswith("# cnbert-classify flags")
    assert "--task=chnsenticorp" in flags_file and "--learning_rate=0.001" in flags_file
    assert "--max_seq_length=64" in flags_file and "--doc_stride" not in flags_file


def test_a_run_stopped_before_its_processes_are_known_still_prints_its_notes(trained_run):
    """Predict mode takes --max_seq_length from the model's settings before the process group
    exists; a usage error found before then must not swallow that note."""
    out, _, _ = trained_run
    proc = run_cli(["--mode=predict", "--task=chnsenticorp", f"--model_dir={out / 'seed_123' / 'best_model'}",
                    "--text_a=房间", "--text_b=很干净"], check=False)
    assert proc.returncode == 2 and "labels one text: pass --text_a only" in proc.stderr
    assert "as in training (cnbert_classify_settings.json): --max_seq_length=64" in proc.stdout


def test_the_models_settings_are_read_for_the_fullwidth_default_only_when_the_flag_is_not_given(trained_run,
                                                                                                 tmp_path):
    """--init_checkpoint a cnbert model whose settings file is broken: an error naming it when the
    default needs it; none when --[no]fullwidth_to_halfwidth decides (the run goes on, here to the
    non-empty --output_dir check that comes after the model's config)."""
    import shutil

    out, dev, _ = trained_run
    model = tmp_path / "model"
    shutil.copytree(out / "seed_123" / "best_model", model)
    (model / "cnbert_classify_settings.json").write_text("[]")
    args = ["--task=chnsenticorp", f"--init_checkpoint={model}", f"--train_file={dev}", f"--dev_file={dev}",
            f"--output_dir={out}"]
    proc = run_cli(args, check=False)
    assert proc.returncode == 1 and "cnbert_classify_settings.json: expected a JSON object" in proc.stderr
    proc = run_cli(args + ["--nofullwidth_to_halfwidth"], check=False)
    assert proc.returncode == 2 and f"--output_dir={out} is not empty" in proc.stderr, proc.stderr[-2000:]


def test_predict_mode_reproduces_the_run_and_labels_one_text(trained_run, tmp_path):
    out, dev, _ = trained_run
    best_model = out / "seed_123" / "best_model"
    proc = run_cli(["--mode=predict", "--task=chnsenticorp", f"--model_dir={best_model}", f"--predict_file={dev}",
                    f"--output_dir={tmp_path / 'p'}"])
    assert "as in training (cnbert_classify_settings.json): --max_seq_length=64" in proc.stdout
    assert_same_predictions(tmp_path / "p" / "predictions.tsv", out / "seed_123" / "predictions.tsv")
    eval_accuracy = json.loads((out / "seed_123" / "eval_results.json").read_text())["accuracy"]
    assert f"accuracy {eval_accuracy:.3f} on the labels in {dev}" in proc.stdout
    # predicting again over a training run's test/ set: no score or predictions of that set stay
    # beside the new predictions; files of no prediction set do
    for stale in ("test_results.json", "predictions.json", "nbest_predictions.json", "notes.txt"):
        (tmp_path / "p" / stale).write_text("{}")
    run_cli(["--mode=predict", "--task=chnsenticorp", f"--model_dir={best_model}", f"--predict_file={dev}",
             f"--output_dir={tmp_path / 'p'}", "--overwrite_output_dir"])
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["notes.txt", "predict_results.json",
                                                                  "predictions.tsv"]
    proc = run_cli(["--mode=predict", "--task=chnsenticorp", f"--model_dir={best_model}", "--text_a=房间很干净，服务也好"])
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["label"] in ("0", "1") and sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
    # LCQMC has the same labels 0 / 1: only the saved task tells the two apart
    proc = run_cli(["--mode=predict", "--task=lcqmc", f"--model_dir={best_model}", "--text_a=a", "--text_b=b"],
                   check=False)
    assert proc.returncode == 2 and "was fine-tuned on --task=chnsenticorp, not --task=lcqmc" in proc.stderr
    proc = run_cli(["--mode=predict", "--task=chnsenticorp", f"--model_dir={best_model}", "--text_a=a",
                    "--text_b=b"], check=False)
    assert proc.returncode == 2 and "labels one text: pass --text_a only" in proc.stderr
    # a window length read from a damaged settings file is checked, and the file named
    damaged = tmp_path / "damaged"
    shutil.copytree(best_model, damaged)
    (damaged / "cnbert_classify_settings.json").write_text(json.dumps({"task": "chnsenticorp", "max_seq_length": 3}))
    proc = run_cli(["--mode=predict", "--task=chnsenticorp", f"--model_dir={damaged}", "--text_a=很好"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("--max_seq_length must be at least 8, got 3 (--max_seq_length from cnbert_classify_settings.json beside "
            "--model_dir)") in proc.stderr


@pytest.mark.parametrize("model_type", ["bert", "albert"])
def test_tensorflow_fine_tunes_pairs_and_pytorch_reads_its_model(tmp_path, tiny_config, model_type):
    train = head_of("lcqmc/lcqmc_train.tsv", 48, tmp_path, "train.tsv")
    dev = head_of("lcqmc/lcqmc_dev.tsv", 24, tmp_path, "dev.tsv")
    with dev.open("a", encoding="utf-8") as file:  # a training pair swapped, and its first question paired anew
        text_a, text_b, label = train.read_text(encoding="utf-8").split("\n")[1].split("\t")
        file.write(f"{text_b}\t{text_a}\t{label}\n{text_a}\t{text_a}\t1\n")
    out = tmp_path / "out"
    config, extra = tiny_config, []
    if model_type == "albert":  # Google ALBERT: 32-wide embeddings, the two layers sharing one group
        config = tmp_path / "tiny_albert_config.json"
        config.write_text(json.dumps({**TINY, "model_type": "albert", "embedding_size": 32}))
        extra = ["--classifier_dropout=0.2"]
    run_cli(["--framework=tf", "--task=lcqmc", f"--bert_config_file={config}", f"--train_file={train}",
             f"--dev_file={dev}", "--max_seq_length=48", "--num_train_epochs=1", "--train_batch_size=16",
             "--learning_rate=1e-3", f"--output_dir={out}", *extra])
    eval_results = json.loads((out / "seed_123" / "eval_results.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert report["seen_in_training"] == {"dev": {"seen": 1, "of": 26}}
    saved = json.loads((out / "seed_123" / "best_model" / "config.json").read_text())
    assert saved["model_type"] == model_type
    # the flag reaches the model, saved under transformers' name for each model type
    assert (saved["classifier_dropout_prob"] == 0.2 if model_type == "albert" else saved["classifier_dropout"] is None)
    assert saved["architectures"] == [f"{model_type.capitalize()}ForSequenceClassification"]
    gold = gold_labels(dev)
    _, rows = read_predictions(out / "seed_123" / "predictions.tsv")
    assert eval_results["accuracy"] == pytest.approx(100 * sum(gold[r[0]] == r[1] for r in rows) / len(rows))
    # the 25 pairs that are not training ones (all but the swapped pair on line 26), alone
    unseen = [r for r in rows if r[0] != "dev.tsv:26"]
    accuracy = 100 * sum(gold[r[0]] == r[1] for r in unseen) / 25
    assert eval_results["unseen"]["examples"] == 25 and eval_results["unseen"]["accuracy"] == pytest.approx(accuracy)
    assert report["unseen"]["examples"] == 25 and report["unseen"]["mean"]["accuracy"] == pytest.approx(accuracy)
    assert (f"On the 25 dev examples not trained on alone, mean (max): accuracy {accuracy:.3f} ({accuracy:.3f})."
            in (out / "report.md").read_text())
    run_cli(["--mode=predict", "--task=lcqmc", f"--model_dir={out / 'seed_123' / 'best_model'}",
             f"--predict_file={dev}", f"--output_dir={tmp_path / 'p'}"])
    _, torch_rows = read_predictions(tmp_path / "p" / "predictions.tsv")
    assert [r[:2] for r in torch_rows] == [r[:2] for r in rows]
    assert_same_probabilities(torch_rows, rows, atol=1e-5)


def test_bad_data_is_refused_before_anything_is_written(tmp_path, tiny_config):
    train = head_of("xnli_zh/dev.tsv", 20, tmp_path, "train.tsv")
    lines = head_of("xnli_zh/test.tsv", 10, tmp_path, "dev.tsv").read_text(encoding="utf-8").split("\n")
    lines[4] = lines[4].rsplit("\t", 1)[0] + "\tcontradictory"
    (tmp_path / "dev.tsv").write_text("\n".join(lines), encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli(["--task=xnli", f"--bert_config_file={tiny_config}", f"--train_file={train}",
                    f"--dev_file={tmp_path / 'dev.tsv'}", f"--output_dir={out}"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'dev.tsv'}: line 5: label 'contradictory' is not one of this task's labels" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--task=cmrc2018"], "--task=cmrc2018: value should be one of <chnsenticorp|dbqa|lcqmc|thucnews|thucnews_titles|xnli>"),
    (["--task=xnli", "--doc_stride=64"], "Unknown command line flag 'doc_stride'"),
    (["--task=xnli", "--mode=predict", "--model_dir=.", "--train_file=x"], "--train_file applies to --mode=train"),
    (["--task=xnli", "--text_a=x"], "--text_a applies to --mode=predict"),
    (["--task=xnli", "--max_seq_length=4", "--bert_config_file=x"], "--max_seq_length must be at least 8"),
])
def test_usage_errors(args, message):
    proc = run_cli(args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "(cnbert-classify --help lists the flags)" in proc.stderr


def test_dbqa_ranks_answers_and_reports_mrr_and_map(tmp_path, tiny_config):
    from test_classification_data import reference_ranking

    lines = data_file("dbqa/nlpcc2017.dbqa.test").read_text(encoding="utf-8").split("\n")
    (tmp_path / "train.txt").write_text("\n".join(lines[:64]) + "\n", encoding="utf-8")
    # the dev file ends with a training pair, and a label outside the task's, as the 2017 dev file's
    # line 2549: left out
    (tmp_path / "dev.txt").write_text("\n".join(lines[64:112] + [lines[0], "10\t" + lines[70].split("\t", 1)[1]])
                                      + "\n", encoding="utf-8")
    out = tmp_path / "out"
    run_cli(["--task=dbqa", f"--bert_config_file={tiny_config}", f"--train_file={tmp_path / 'train.txt'}",
             f"--dev_file={tmp_path / 'dev.txt'}", "--max_seq_length=64", "--num_train_epochs=1",
             "--train_batch_size=16", "--learning_rate=1e-3", f"--output_dir={out}"])
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == ["MRR", "MAP", "accuracy", "F1"]
    eval_results = json.loads((out / "seed_123" / "eval_results.json").read_text())
    assert eval_results["left_out"] == ["dev.txt:50"]
    # one candidate was trained on; the others are not scored alone, as a ranking of part of a
    # question's candidates would rank another list
    assert report["seen_in_training"] == {"dev": {"seen": 1, "of": 49}} and "unseen" not in eval_results
    _, rows = read_predictions(out / "seed_123" / "predictions.tsv")
    dev = [line.split("\t") for line in lines[64:112] + [lines[0]]]
    questions, relevant = [q for _, q, _ in dev], [label == "1" for label, _, _ in dev]
    scores = [float(r[3]) for r in rows]  # p(1): the ranking score
    mrr, map_ = reference_ranking(questions, relevant, scores)
    # p(1) is written in full, so the file's ranking is the run's: the scores recompute exactly
    assert eval_results["MRR"] == pytest.approx(mrr, rel=1e-12) and eval_results["MAP"] == pytest.approx(map_, rel=1e-12)
    # predict mode: a file without labels, and one whose labels cannot be ranked, are still predicted
    model_dir = out / "seed_123" / "best_model"
    (tmp_path / "unlabelled.txt").write_text("\n".join(line.split("\t", 1)[1] for line in lines[64:112]) + "\n",
                                             encoding="utf-8")
    (tmp_path / "zeros.txt").write_text("\n".join("0\t" + line.split("\t", 1)[1] for line in lines[64:112]) + "\n",
                                        encoding="utf-8")
    for name in ("unlabelled", "zeros"):
        proc = run_cli(["--mode=predict", "--task=dbqa", f"--model_dir={model_dir}",
                        f"--predict_file={tmp_path / f'{name}.txt'}", f"--output_dir={tmp_path / name}"])
        assert ("cannot be scored" in proc.stdout) == (name == "zeros") and "MRR" not in proc.stdout
        assert json.loads((tmp_path / name / "predict_results.json").read_text())["scores"] is None
        _, predicted = read_predictions(tmp_path / name / "predictions.tsv")
        assert_same_probabilities(predicted, rows[:48])  # the dev file's first 48 lines
    # a label outside the task's (as on line 2549 of the 2017 dev file): that line is predicted, the
    # others are scored as training scored them
    with_bad = lines[64:69] + ["10\t" + lines[69].split("\t", 1)[1]] + lines[69:112]
    (tmp_path / "bad.txt").write_text("\n".join(with_bad) + "\n", encoding="utf-8")
    proc = run_cli(["--mode=predict", "--task=dbqa", f"--model_dir={model_dir}",
                    f"--predict_file={tmp_path / 'bad.txt'}", f"--output_dir={tmp_path / 'bad'}"])
    assert "bad.txt: 1 of 49 lines have labels outside the task's" in proc.stdout
    assert f"MRR {eval_results['MRR']:.3f}, MAP {eval_results['MAP']:.3f}" in proc.stdout
    scores = json.loads((tmp_path / "bad" / "predict_results.json").read_text())["scores"]
    assert scores["MRR"] == pytest.approx(eval_results["MRR"]) and scores["left_out"] == ["bad.txt:6"]
    _, predicted = read_predictions(tmp_path / "bad" / "predictions.tsv")
    assert len(predicted) == 49
    assert_same_probabilities(predicted[:5] + predicted[6:], rows[:48])
    # a dev file that cannot be ranked is refused before training
    proc = run_cli(["--task=dbqa", f"--bert_config_file={tiny_config}", f"--train_file={tmp_path / 'train.txt'}",
                    f"--dev_file={tmp_path / 'zeros.txt'}", "--max_seq_length=64", f"--output_dir={tmp_path / 'o2'}"],
                   check=False)
    assert proc.returncode == 1 and "zeros.txt: no candidate is labelled '1'" in proc.stderr
    answered = {q for q, r in zip(questions, relevant) if r}  # the slice may cut a question off its answer
    assert eval_results["questions"] == len(answered)
    assert eval_results["questions_without_answer"] == len(set(questions)) - len(answered)


def test_predict_mode_under_torchrun_prints_and_writes_once(trained_run, tmp_path):
    """Every process predicts (the outputs are gathered to each); only the main one prints and writes."""
    out, dev, _ = trained_run
    best_model = out / "seed_123" / "best_model"
    proc = run_runner(["--mode=predict", "--task=chnsenticorp", f"--model_dir={best_model}", "--text_a=房间很干净"],
                      torchrun_procs=2, module="cnbert.runners.classify")
    assert sum(line.startswith('{"label"') for line in proc.stdout.splitlines()) == 1
    proc = run_runner(["--mode=predict", "--task=chnsenticorp", f"--model_dir={best_model}", f"--predict_file={dev}",
                       f"--output_dir={tmp_path / 'p'}"], torchrun_procs=2, module="cnbert.runners.classify")
    assert sum(line.startswith("wrote ") for line in proc.stdout.splitlines()) == 1
    assert proc.stdout.count("as in training (cnbert_classify_settings.json)") == 1
    assert_same_predictions(tmp_path / "p" / "predictions.tsv", out / "seed_123" / "predictions.tsv")


def test_too_few_training_features_are_refused_before_the_earlier_run_is_touched(trained_run, tmp_path, tiny_config):
    out, dev, _ = trained_run
    earlier = tmp_path / "earlier"
    shutil.copytree(out, earlier)
    train = head_of("chnsenticorp/train.tsv", 3, tmp_path, "train.tsv")
    proc = run_cli(["--task=chnsenticorp", f"--bert_config_file={tiny_config}", f"--train_file={train}",
                    f"--dev_file={dev}", "--gradient_accumulation_steps=4", "--train_batch_size=8",
                    f"--output_dir={earlier}", "--overwrite_output_dir"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (f"{train}: 3 training feature(s), too few to give each of 1 process(es) x 4 accumulation step(s) one"
            in proc.stderr)
    assert (earlier / "report.json").read_text() == (out / "report.json").read_text()  # the earlier run is whole


MULTI_WORKER = """
import json, os, sys
port, index = int(sys.argv.pop(1)), int(sys.argv.pop(1))
cluster = {"worker": [f"localhost:{port}", f"localhost:{port + 1}"]}
os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
from cnbert.runners import classify
classify.run()
"""


def run_two_tf_workers(tmp_path, args) -> list[tuple[int, str, str]]:
    """cnbert-classify with `args` as two TensorFlow workers (TF_CONFIG on localhost): each worker's
    (exit status, stdout, stderr), the chief's first."""
    import socket
    import subprocess
    import sys

    from conftest import REPO
    script = tmp_path / "worker.py"
    script.write_text(MULTI_WORKER)
    with socket.socket() as probe:  # a free port pair is likely next to a free port
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, str(script), str(port), str(index), *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in (0, 1)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    return [(worker.returncode, stdout, stderr) for worker, (stdout, stderr) in zip(workers, outputs)]


def test_tensorflow_multi_worker_run_writes_once_from_the_chief(tmp_path, tiny_config):
    """Two workers (TF_CONFIG on localhost) sharing --output_dir, as on a shared filesystem: the
    strategy is made before TensorFlow runs an op, only the chief writes and prints, and the other
    worker waits for the chief's best model before scoring the test file with it."""
    train = head_of("chnsenticorp/train.tsv", 32, tmp_path, "train.tsv")
    dev = head_of("chnsenticorp/dev.tsv", 16, tmp_path, "dev.tsv")
    out = tmp_path / "out"
    args = ["--framework=tf", "--distribution_strategy=multi_worker_mirrored", "--task=chnsenticorp",
            f"--bert_config_file={tiny_config}", f"--train_file={train}", f"--dev_file={dev}", "--do_predict",
            f"--test_file={dev}", "--max_seq_length=64", "--num_train_epochs=1", "--train_batch_size=8",
            "--learning_rate=1e-3", "--seeds=1", "--noprogress", "--device=cpu", f"--output_dir={out}"]
    outputs = run_two_tf_workers(tmp_path, args)
    for status, _, stderr in outputs:
        assert status == 0, stderr[-3000:]
    chief, other = outputs[0][1], outputs[1][1]
    assert "seed 1: best dev" in chief and "test: accuracy" in chief
    assert "seed 1: best dev" not in other and "test: accuracy" not in other
    report = json.loads((out / "report.json").read_text())
    test_results = json.loads((out / "test" / "test_results.json").read_text())
    assert test_results["model_dir"].endswith("seed_1/best_model") and set(report["seeds"]) == {"1"}
    environment = report["environments"]["1"]  # a replica on each worker
    assert environment["framework"].startswith("tensorflow ") and (environment["device"], environment["replicas"]) == \
        ("CPU", 2)
    assert not [path for path in out.rglob(".staged-*")]


EXIT_STATUS_PER_RANK = """
import os, time
from pathlib import Path
status_dir = Path(__file__).parent / "statuses"
from cnbert.runners import classify
try:
    classify.run()
except SystemExit as exit:
    (status_dir / f"rank{os.environ['RANK']}").write_text(str(exit.code))
    if os.environ["RANK"] == "0":
        time.sleep(3)  # so that torchrun cannot stop rank 1 before it has written its status
    raise
"""


def test_a_non_empty_output_dir_stops_every_torchrun_process_with_the_usage_error(trained_run, tmp_path, tiny_config):
    """Rank 0 alone looks into --output_dir (the others could see the flags.txt it writes), and tells
    the others: every process exits with the usage error, none goes on to read data."""
    out, dev, _ = trained_run
    script = tmp_path / "exit_status.py"
    script.write_text(EXIT_STATUS_PER_RANK)
    statuses = tmp_path / "statuses"
    statuses.mkdir()
    proc = run_runner(["--task=chnsenticorp", f"--bert_config_file={tiny_config}",
                       f"--train_file={dev}", f"--dev_file={dev}", f"--output_dir={out}"],
                      torchrun_procs=2, check=False, script=script)
    assert proc.returncode != 0
    assert {path.name: path.read_text() for path in statuses.iterdir()} == {"rank0": "2", "rank1": "2"}, \
        proc.stderr[-3000:]
    assert proc.stderr.count(f"--output_dir={out} is not empty") == 2


def test_a_non_empty_output_dir_stops_every_tensorflow_worker_with_the_usage_error(trained_run, tmp_path,
                                                                                   tiny_config):
    out, dev, _ = trained_run
    args = ["--framework=tf", "--distribution_strategy=multi_worker_mirrored", "--task=chnsenticorp",
            f"--bert_config_file={tiny_config}", f"--train_file={dev}", f"--dev_file={dev}", "--noprogress",
            "--device=cpu", f"--output_dir={out}"]
    for status, _, stderr in run_two_tf_workers(tmp_path, args):
        assert status == 2, stderr[-3000:]
        assert f"--output_dir={out} is not empty" in stderr


TWO_LOGICAL_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cnbert.runners import classify
classify.run()
"""


def test_a_batch_too_small_for_the_tf_replicas_is_refused_before_the_earlier_run_is_touched(trained_run, tmp_path,
                                                                                            tiny_config):
    """mirrored over two replicas (two logical CPUs stand in for two GPUs): the batch split is checked
    against the replicas, as under torchrun against the processes."""
    out, dev, _ = trained_run
    earlier = tmp_path / "earlier"
    shutil.copytree(out, earlier)
    script = tmp_path / "two_cpus.py"
    script.write_text(TWO_LOGICAL_CPUS)
    proc = run_runner(["--framework=tf", "--distribution_strategy=mirrored", "--task=chnsenticorp",
                       f"--bert_config_file={tiny_config}", f"--train_file={dev}", f"--dev_file={dev}",
                       "--train_batch_size=1", f"--output_dir={earlier}", "--overwrite_output_dir"],
                      check=False, script=script)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--train_batch_size=1 cannot be split over 2 process(es) x 1 accumulation steps" in proc.stderr
    assert (earlier / "report.json").read_text() == (out / "report.json").read_text()


def test_do_predict_scores_the_test_file_it_was_given_and_each_seed_keeps_its_best_evaluation(tmp_path, tiny_config):
    # trained_run scores its dev file as the test file; here the two differ
    train = head_of("chnsenticorp/train.tsv", 32, tmp_path, "train.tsv")
    dev = head_of("chnsenticorp/dev.tsv", 16, tmp_path, "dev.tsv")
    test = head_of("chnsenticorp/test.tsv", 12, tmp_path, "test.tsv")
    trained = train.read_text(encoding="utf-8").split("\n")[1:5]
    # three training reviews amid the test file's (one with another label), one at the dev file's start
    lines = test.read_text(encoding="utf-8").split("\n")
    test.write_text("\n".join(lines[:7] + trained[:2] + ["01"[trained[2][0] == "0"] + trained[2][1:]] + lines[7:]),
                    encoding="utf-8")
    lines = dev.read_text(encoding="utf-8").split("\n")
    dev.write_text("\n".join(lines[:1] + trained[3:] + lines[1:]), encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli(["--task=chnsenticorp", f"--bert_config_file={tiny_config}", f"--train_file={train}",
                    f"--dev_file={dev}", "--max_seq_length=32", "--num_train_epochs=2", "--train_batch_size=16",
                    "--learning_rate=1e-3", "--eval_every=1", "--seeds=123,456", "--do_predict", f"--test_file={test}",
                    f"--output_dir={out}"])
    # the run says how many evaluated examples it trained on, and the report records it
    assert ("NOTE: 3 of the 15 test examples (20.0 %) are training examples word for word: the model is scored on "
            "examples it was trained on") in proc.stdout and "NOTE: 1 of the 17 dev examples (5.9 %)" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["seen_in_training"] == {"dev": {"seen": 1, "of": 17}, "test": {"seen": 3, "of": 15}}
    markdown = (out / "report.md").read_text()
    assert "\n1 of the 17 dev examples (5.9 %) are training examples word for word.\n" in markdown
    assert "\n3 of the 15 test examples (20.0 %) are training examples word for word.\n" in markdown
    _, rows = read_predictions(out / "test" / "predictions.tsv")
    gold = gold_labels(test)
    assert [r[0] for r in rows] == list(gold)  # test.tsv:2 ... test.tsv:16
    results = json.loads((out / "test" / "test_results.json").read_text())
    assert results["accuracy"] == pytest.approx(100 * sum(gold[r[0]] == r[1] for r in rows) / len(rows))
    # and the test file's 12 reviews that are not training ones (all but lines 8 to 10), alone
    unseen = [r for r in rows if r[0] not in ("test.tsv:8", "test.tsv:9", "test.tsv:10")]
    assert results["unseen"]["examples"] == 12 and results["unseen"]["accuracy"] == \
        pytest.approx(100 * sum(gold[r[0]] == r[1] for r in unseen) / 12)
    # the dev file's 16 reviews that are not training ones, per seed and over the seeds
    dev_gold = gold_labels(dev)
    per_seed = []
    for seed in (123, 456):
        _, dev_rows = read_predictions(out / f"seed_{seed}" / "predictions.tsv")
        accuracy = 100 * sum(dev_gold[r[0]] == r[1] for r in dev_rows if r[0] != "dev.tsv:2") / 16
        eval_results = json.loads((out / f"seed_{seed}" / "eval_results.json").read_text())
        assert eval_results["unseen"]["examples"] == 16
        assert eval_results["unseen"]["accuracy"] == pytest.approx(accuracy)
        per_seed.append(accuracy)
    assert report["unseen"]["examples"] == 16 and report["unseen"]["mean"]["accuracy"] == pytest.approx(
        sum(per_seed) / 2) and report["unseen"]["max"]["accuracy"] == pytest.approx(max(per_seed))
    assert (f"On the 16 dev examples not trained on alone, mean (max): accuracy {sum(per_seed) / 2:.3f} "
            f"({max(per_seed):.3f}).") in markdown
    history = json.loads((out / "seed_123" / "training_history.json").read_text())
    best = max(history["evaluations"], key=lambda e: e["accuracy"])  # max keeps the first of ties, as the run does
    assert json.loads((out / "seed_123" / "eval_results.json").read_text()) == best
