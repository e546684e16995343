"""cnbert-ner end to end, in subprocesses (the runners share absl's global flags): a tiny random BERT
memorises 48 real MSRA sentences, most longer than one window, the saved predictions agree with the
saved scores, predict mode reproduces the run and prints entities, and TensorFlow's model is read by
PyTorch."""
import json

import pytest
from conftest import data_file
from test_mrc_runner import run_cli as run_runner

from cnbert.data.ner import entities, entity_scores

TINY = {"model_type": "bert", "vocab_size": 21128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0}


def run_cli(args, check=True):
    return run_runner(args, check=check, module="cnbert.runners.ner")


def sentences_with_entities(count, max_chars):
    blocks = data_file("msra_ner/msra_train_bio").read_text(encoding="utf-8").split("\n\n")
    return [b for b in blocks if "\tB-" in b and len(b.split("\n")) <= max_chars][:count]


def read_conll(path):
    """[(chars, gold, predicted)] of a predictions.txt (`character gold predicted` lines)."""
    sentences = []
    for block in path.read_text(encoding="utf-8").strip("\n").split("\n\n"):
        sentences.append(tuple(zip(*(line.split("\t") for line in block.split("\n")))))
    return sentences


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("msra")
    (directory / "config.json").write_text(json.dumps(TINY))
    data = directory / "small.txt"
    data.write_text("\n\n".join(sentences_with_entities(48, 40)) + "\n\n", encoding="utf-8")
    out = directory / "out"
    # windows of 22 characters starting 11 apart: most sentences take several
    assert sum(len(block.split("\n")) > 22 for block in data.read_text(encoding="utf-8").split("\n\n")) > 24
    run_cli(["--task=msra_ner", f"--bert_config_file={directory / 'config.json'}", f"--train_file={data}",
             f"--dev_file={data}", "--max_seq_length=24", "--num_train_epochs=30", "--train_batch_size=16",
             "--learning_rate=3e-3", f"--output_dir={out}"])
    return out, data


def test_a_tiny_model_memorises_real_sentences_and_its_files_agree(trained_run):
    out, data = trained_run
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == ["F1", "precision", "recall"]
    eval_results = json.loads((out / "seed_123" / "eval_results.json").read_text())
    assert eval_results["F1"] > 90.0  # memorised: the characters and their tags are aligned
    rows = read_conll(out / "seed_123" / "predictions.txt")
    gold = [block.split("\n") for block in data.read_text(encoding="utf-8").strip("\n").split("\n\n")]
    assert [list(chars) for chars, _, _ in rows] == [[line.split("\t")[0] for line in b] for b in gold]
    assert [list(g) for _, g, _ in rows] == [[line.split("\t")[1] for line in b] for b in gold]
    assert report["seen_in_training"] == {"dev": {"seen": len(gold), "of": len(gold)}}  # dev is the training file
    rescored = entity_scores([g for _, g, _ in rows], [p for _, _, p in rows])
    assert rescored["F1"] == pytest.approx(eval_results["F1"]) and rescored["gold"] == eval_results["gold"]
    settings = json.loads((out / "seed_123" / "best_model" / "cnbert_ner_settings.json").read_text())
    assert settings["task"] == "msra_ner" and settings["max_seq_length"] == 24
    assert settings["doc_stride"] == 11  # the default, half a window of 22 characters, saved resolved
    config = json.loads((out / "seed_123" / "best_model" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["id2label"]["1"] == "B-PER"


def test_predict_mode_reproduces_the_run_and_prints_entities(trained_run, tmp_path):
    out, data = trained_run
    best_model = out / "seed_123" / "best_model"
    proc = run_cli(["--mode=predict", "--task=msra_ner", f"--model_dir={best_model}", f"--predict_file={data}",
                    f"--output_dir={tmp_path / 'p'}"])
    assert "as in training (cnbert_ner_settings.json): --max_seq_length=24, --doc_stride=11" in proc.stdout
    assert (tmp_path / "p" / "predictions.txt").read_text() == (out / "seed_123" / "predictions.txt").read_text()
    # the scores of the tagged file are kept beside the predictions, as the training run's are
    results = json.loads((tmp_path / "p" / "predict_results.json").read_text())
    eval_results = json.loads((out / "seed_123" / "eval_results.json").read_text())
    assert results["predict_file"] == str(data) and results["scores"]["F1"] == pytest.approx(eval_results["F1"])
    chars, _, predicted = read_conll(out / "seed_123" / "predictions.txt")[0]
    text = "".join(chars)
    proc = run_cli(["--mode=predict", "--task=msra_ner", f"--model_dir={best_model}", f"--text={text}"])
    printed = json.loads(proc.stdout.strip().splitlines()[-1])["entities"]
    want = sorted(entities(predicted))
    assert [(e["start"], e["end"], e["type"]) for e in printed] == want and want
    assert all(e["text"] == text[e["start"]:e["end"]] for e in printed)
    proc = run_cli(["--mode=predict", "--task=msra_ner", f"--model_dir={best_model}", f"--text={text}",
                    f"--output_dir={tmp_path / 'x'}"], check=False)
    assert proc.returncode == 2 and "--output_dir is for --predict_file" in proc.stderr
    # windows of one's own: the default stride for them, not the training run's 11 (> 12 - 2)
    proc = run_cli(["--mode=predict", "--task=msra_ner", f"--model_dir={best_model}", f"--text={text}",
                    "--max_seq_length=12"])
    assert "--doc_stride" not in proc.stdout and "entities" in proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("settings, message", [
    ({"doc_stride": 12.5}, "doc_stride must be an integer, got 12.5"),
    ({"max_seq_length": 24, "doc_stride": 30}, "--doc_stride must be between 1 and --max_seq_length - 2 = 22 "
                                                "(larger steps would skip characters), got 30 (--doc_stride, "
                                                "--max_seq_length from cnbert_ner_settings.json beside --model_dir)"),
])
def test_a_damaged_settings_file_beside_the_model_is_named(tmp_path, settings, message):
    (tmp_path / "cnbert_ner_settings.json").write_text(json.dumps({"task": "msra_ner", **settings}))
    proc = run_cli(["--mode=predict", "--task=msra_ner", f"--model_dir={tmp_path}", "--text=北京"], check=False)
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_tensorflow_tags_and_pytorch_reads_its_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    data = tmp_path / "small.txt"
    sentences = sentences_with_entities(24, 60)
    data.write_text("\n\n".join(sentences) + "\n\n", encoding="utf-8")
    dev = tmp_path / "dev.txt"  # ten training sentences, one retagged, and one that is not a training sentence

    def all_o(block, order=1):
        return "\n".join(line.split("\t")[0] + "\tO" for line in block.split("\n")[::order])

    dev.write_text("\n\n".join(sentences[:10] + [all_o(sentences[10]), all_o(sentences[11], -1)]) + "\n\n",
                   encoding="utf-8")
    out = tmp_path / "out"
    run_cli(["--framework=tf", "--task=msra_ner", f"--bert_config_file={tmp_path / 'config.json'}",
             f"--train_file={data}", f"--dev_file={dev}", "--max_seq_length=32", "--num_train_epochs=1",
             "--train_batch_size=8", f"--output_dir={out}"])
    # a sentence is a training one by its characters, whatever its tags; the one that is not is scored alone too
    assert json.loads((out / "report.json").read_text())["seen_in_training"] == {"dev": {"seen": 11, "of": 12}}
    last = read_conll(out / "seed_123" / "predictions.txt")[-1]
    alone = entity_scores([last[1]], [last[2]])
    unseen = json.loads((out / "seed_123" / "eval_results.json").read_text())["unseen"]
    assert unseen["examples"] == 1 and unseen["F1"] == pytest.approx(alone["F1"]) and unseen["gold"] == alone["gold"]
    run_cli(["--mode=predict", "--task=msra_ner", f"--model_dir={out / 'seed_123' / 'best_model'}",
             f"--predict_file={dev}", f"--output_dir={tmp_path / 'p'}"])
    assert (tmp_path / "p" / "predictions.txt").read_text() == (out / "seed_123" / "predictions.txt").read_text()


def test_a_bad_tag_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    data = tmp_path / "bad.txt"
    data.write_text("北\tB-LOC\n京\tI-GPE\n\n", encoding="utf-8")
    proc = run_cli(["--task=msra_ner", f"--bert_config_file={tmp_path / 'config.json'}", f"--train_file={data}",
                    f"--dev_file={data}", "--max_seq_length=32", f"--output_dir={tmp_path / 'out'}"], check=False)
    assert proc.returncode == 1 and f"{data}: line 2: tag 'I-GPE' is not one of this task's tags" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_doc_stride_longer_than_a_window_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    data = tmp_path / "small.txt"
    data.write_text("\n\n".join(sentences_with_entities(4, 60)) + "\n\n", encoding="utf-8")
    proc = run_cli(["--task=msra_ner", f"--bert_config_file={tmp_path / 'config.json'}", f"--train_file={data}",
                    f"--dev_file={data}", "--max_seq_length=32", "--doc_stride=31", f"--output_dir={tmp_path / 'out'}"],
                   check=False)
    assert proc.returncode == 2
    assert "--doc_stride must be between 1 and --max_seq_length - 2 = 30 (larger steps would skip characters), " \
           "got 31" in proc.stderr
    assert not (tmp_path / "out").exists()
