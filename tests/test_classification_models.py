"""Sequence classifiers (PyTorch and TensorFlow) against transformers' BertForSequenceClassification /
AlbertForSequenceClassification, checkpoint exchange with their labels, the loss, and the two
trainers taking the same steps on real XNLI features."""
import json

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F
from conftest import data_file
from model_helpers import (TINY_BERT, VOCAB_SIZE, padded_batch, random_transformers_model, randomise, save_hf,
                           train_in_both_frameworks)

import cnbert.tf as ctf
from cnbert.checkpoints import CheckpointError
from cnbert.config import AlbertConfig, BertConfig
from cnbert.data.classification import build_classification_features
from cnbert.tasks import classification as tasks
from cnbert.tf.checkpoint import model_for_task as tf_model_for_task
from cnbert.tokenization import ChineseBertTokenizer, bundled_vocab_path
from cnbert.torch import (
    AlbertForSequenceClassification,
    BertForSequenceClassification,
    classification_loss,
    load_for_task,
    model_for_task,
    save_pretrained,
)
from cnbert.torch import backend as torch_backend

pytestmark = pytest.mark.usefixtures("one_torch_thread")

XNLI_LABELS = {0: "contradiction", 1: "entailment", 2: "neutral"}
FLOAT64_TOLERANCE = 1e-10  # float64 against float64, same operations up to summation order
FLOAT32_TOLERANCE = 1e-5   # float32 across frameworks, absolute, on logits of magnitude ~1


def hf_logits(model, batch):
    input_ids, attention_mask, token_type_ids = batch
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def our_logits(model, batch):
    with torch.no_grad():
        return model.eval()(*batch)["logits"]


def test_bert_classifier_is_transformers_bert_for_sequence_classification_in_float64(tmp_path):
    hf = random_transformers_model("BertForSequenceClassification", id2label=XNLI_LABELS, **TINY_BERT)
    ours, report = load_for_task("xnli", save_hf(hf, tmp_path / "hf"))
    assert isinstance(ours, BertForSequenceClassification) and report.initialised == []
    assert ours.labels == ("contradiction", "entailment", "neutral")
    batch = padded_batch()
    torch.testing.assert_close(our_logits(ours.double(), batch), hf_logits(hf.double(), batch),
                               atol=FLOAT64_TOLERANCE, rtol=0)


@pytest.mark.parametrize("layout", ["albert"])
def test_albert_classifier_is_transformers_albert_for_sequence_classification_in_float64(tmp_path, layout):
    sizes = dict(vocab_size=VOCAB_SIZE, embedding_size=16, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=48)
    hf = random_transformers_model("AlbertForSequenceClassification", **sizes)  # LABEL_0, LABEL_1: two labels
    ours, report = load_for_task("lcqmc", save_hf(hf, tmp_path / "hf"))
    assert isinstance(ours, AlbertForSequenceClassification) and report.initialised == []
    assert ours.hf_architecture == "AlbertForSequenceClassification"
    batch = padded_batch()
    torch.testing.assert_close(our_logits(ours.double(), batch), hf_logits(hf.double(), batch),
                               atol=FLOAT64_TOLERANCE, rtol=0)


@pytest.mark.parametrize("task, output", [("lcqmc", "logits"), ("msra_ner", "logits"), ("cjrc", "class_logits")])
@pytest.mark.parametrize("layout", ["albert", "factorized_word"])
def test_albert_heads_drop_their_input_at_0_1_though_the_encoder_has_no_dropout(layout, task, output):
    """ALBERT configs set every dropout to 0, yet Google's and brightmart's fine-tuning code drops
    the classifier's input at 0.1 (cnbert.config.AlbertConfig.classifier_dropout); in both frameworks."""
    config = AlbertConfig(vocab_size=VOCAB_SIZE, embedding_size=16, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128, max_position_embeddings=48,
                          embedding_layout=layout, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch = padded_batch()
    arrays = [b.numpy() for b in batch]

    def torch_outputs(config):
        torch.manual_seed(0)
        model = model_for_task(task, config).train()
        return [model(*batch)[output].detach() for _ in range(2)]

    def tf_outputs(config):
        model = tf_model_for_task(task, config)
        return [model(arrays[0], attention_mask=arrays[1], token_type_ids=arrays[2], training=True,
                      dropout_seed=seed)[output].numpy() for seed in ([1, 2], [3, 4])]

    first, second = torch_outputs(config)
    assert (first - second).abs().max() > 1e-3
    first, second = torch_outputs(config.replace(classifier_dropout=0.0))
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    first, second = tf_outputs(config)
    assert np.abs(first - second).max() > 1e-3
    first, second = tf_outputs(config.replace(classifier_dropout=0.0))
    np.testing.assert_array_equal(first, second)


def test_factorized_albert_classifier_saves_and_reloads(tmp_path):
    config = AlbertConfig(vocab_size=VOCAB_SIZE, embedding_size=16, hidden_size=64, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=128, max_position_embeddings=48,
                          embedding_layout="factorized_word")
    model = randomise(model_for_task("thucnews", config))
    assert "albert.pooler.dense.weight" in model.state_dict()
    save_pretrained(model, tmp_path / "m", bundled_vocab_path())
    reloaded, report = load_for_task("thucnews", tmp_path / "m", allow_fresh_heads=False)
    batch = padded_batch()
    torch.testing.assert_close(our_logits(reloaded, batch), our_logits(model, batch), atol=0, rtol=0)
    assert our_logits(model, batch).shape == (3, 10)


def test_a_pretrained_encoder_brings_its_pooler_and_the_classifier_starts_fresh(tmp_path):
    hf = random_transformers_model("BertModel", **TINY_BERT)
    ours, report = load_for_task("chnsenticorp", save_hf(hf, tmp_path / "hf"))
    assert sorted(report.initialised) == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(ours.bert.pooler.dense.weight, hf.pooler.dense.weight, atol=0, rtol=0)
    # a reading-comprehension checkpoint has no pooler: the classifier would start from a random one
    qa = random_transformers_model("BertForQuestionAnswering", **TINY_BERT)
    with pytest.raises(CheckpointError, match=r"missing weights .*bert\.pooler\.dense\.weight.*unexpected keys .*qa_outputs"):
        load_for_task("chnsenticorp", save_hf(qa, tmp_path / "qa"))


def test_a_classifier_trained_on_other_labels_is_refused(tmp_path):
    other_order = {0: "entailment", 1: "neutral", 2: "contradiction"}
    hf = random_transformers_model("BertForSequenceClassification", id2label=other_order, **TINY_BERT)
    directory = save_hf(hf, tmp_path / "hf")
    with pytest.raises(CheckpointError, match=r"config\.json: its classifier was trained on the labels "
                                              r"\['entailment', 'neutral', 'contradiction'\].*"
                                              r"\['contradiction', 'entailment', 'neutral'\]"):
        load_for_task("xnli", directory)
    with pytest.raises(CheckpointError, match="trained on the labels"):
        ctf.load_finetuned(directory, "xnli")
    # two labels with other names (an LCQMC classifier offered for ChnSentiCorp would pass: both are 0/1)
    named = random_transformers_model("BertForSequenceClassification", id2label={0: "neg", 1: "pos"}, **TINY_BERT)
    with pytest.raises(CheckpointError, match=r"\['neg', 'pos'\]"):
        load_for_task("chnsenticorp", save_hf(named, tmp_path / "named"))


def test_saved_classifier_loads_in_transformers_with_its_labels(tmp_path):
    torch.manual_seed(0)
    model = randomise(model_for_task("xnli", BertConfig(**TINY_BERT)))
    save_pretrained(model, tmp_path / "m", bundled_vocab_path())
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    import transformers

    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "m", attn_implementation="eager").eval()
    assert hf.config.num_labels == 3 and hf.config.id2label[2] == "neutral"
    batch = padded_batch()
    torch.testing.assert_close(hf_logits(hf, batch), our_logits(model, batch), atol=FLOAT32_TOLERANCE, rtol=0)
    reloaded = torch_backend.load_finetuned(tmp_path / "m", "xnli")
    torch.testing.assert_close(our_logits(reloaded, batch), our_logits(model, batch), atol=0, rtol=0)


def test_classification_loss_is_mean_cross_entropy_with_ignored_labels():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, -100, 1, 2])
    keep = labels != -100
    want = F.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(classification_loss({"logits": logits}, labels), want)
    per_example = classification_loss({"logits": logits}, labels, reduction="none")
    assert per_example[2] == 0 and torch.isclose(per_example.sum() / 4, want)
    tf_loss = ctf.classification_loss({"logits": tf.constant(logits.numpy())}, labels.numpy(), reduction="none")
    np.testing.assert_allclose(tf_loss.numpy(), per_example.numpy(), atol=1e-6, rtol=0)
    for loss in (classification_loss, ctf.classification_loss):
        with pytest.raises(ValueError, match=r"labels holds \[3\]"):
            loss({"logits": logits if loss is classification_loss else tf.constant(logits.numpy())},
                 np.array([0, 1, 3, 1, 2]) if loss is ctf.classification_loss else torch.tensor([0, 1, 3, 1, 2]))


def test_tf_classifier_exchanges_weights_with_pytorch(tmp_path):
    torch.manual_seed(0)
    model = randomise(model_for_task("lcqmc", BertConfig(**TINY_BERT)))
    save_pretrained(model, tmp_path / "torch", bundled_vocab_path())
    tf_model = ctf.load_finetuned(tmp_path / "torch", "lcqmc")
    assert tf_model.labels == ("0", "1")
    batch = padded_batch()
    got = tf_model(*(b.numpy() for b in batch[:1]), attention_mask=batch[1].numpy(), token_type_ids=batch[2].numpy())
    np.testing.assert_allclose(got["logits"].numpy(), our_logits(model, batch).numpy(), atol=FLOAT32_TOLERANCE, rtol=0)
    ctf.save_pretrained(tf_model, tmp_path / "tf", bundled_vocab_path())
    back, _ = load_for_task("lcqmc", tmp_path / "tf", allow_fresh_heads=False)
    torch.testing.assert_close(our_logits(back, batch), our_logits(model, batch), atol=0, rtol=0)
    copy = tf_model.same_architecture()
    assert copy.labels == tf_model.labels and [v.path for v in copy.weights] == [v.path for v in tf_model.weights]


@pytest.mark.parametrize("group_by_length", [False, True])
def test_both_trainers_take_the_same_steps_on_real_xnli_features(group_by_length):
    """Same initial weights, dropout off, 24 real XNLI pairs: per-step losses and final logits agree,
    also with batches grouped by length (which PyTorch then runs narrower, TF at full width)."""
    task = tasks.get_task("xnli")
    examples = task.read(data_file("xnli_zh/dev.tsv"))[:24]
    arrays = build_classification_features(examples, ChineseBertTokenizer(), 32, task.labels).model_arrays()
    trainer = train_in_both_frameworks("xnli", arrays, num_labels=3, group_by_length=group_by_length)
    bad = dict(arrays, labels=np.where(np.arange(24) == 5, 3, arrays["labels"]))
    with pytest.raises(ValueError, match=r"labels holds \[3\] \(rows \[5\]\)"):
        trainer.fit(bad)


def test_label_names_in_config_json():
    from cnbert.config import ConfigError, check_label_names, label_maps, saved_label_names

    assert label_maps(["b", "a"]) == {"id2label": {"0": "b", "1": "a"}, "label2id": {"b": 0, "a": 1}}
    assert saved_label_names({"id2label": {"1": "a", "0": "b"}}) == ("b", "a")
    assert saved_label_names({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}) is None  # transformers' placeholders
    assert saved_label_names({"hidden_size": 8}) is None
    for id2label, problem in (({"0": "a", "2": "b"}, "must map 0, 1, ... n-1"), ({"x": "a"}, "not an integer"),
                              (["a", "b"], "must be an object")):
        with pytest.raises(ConfigError, match=f"config.json: id2label.*{problem}|config.json: .*{problem}"):
            saved_label_names({"id2label": id2label}, source="config.json")
    for labels in (["a"], ["a", "a"], ["a", ""]):
        with pytest.raises(ValueError, match="at least two distinct non-empty strings"):
            check_label_names(labels)


def test_exported_classifier_serves_its_logits(tmp_path):
    torch.manual_seed(0)
    model = ctf.load_finetuned(save_pretrained(randomise(model_for_task("chnsenticorp", BertConfig(**TINY_BERT))),
                                               tmp_path / "m", bundled_vocab_path()), "chnsenticorp")
    input_ids, attention_mask, token_type_ids = (b.numpy().astype(np.int32) for b in padded_batch())
    ctf.export_saved_model(model, tmp_path / "saved")
    served = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"](
        input_ids=tf.constant(input_ids), token_type_ids=tf.constant(token_type_ids),
        attention_mask=tf.constant(attention_mask))
    want = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)["logits"].numpy()
    assert list(served) == ["logits"]
    # the served graph is optimised (grappler) and sums in another order than eager code: 1e-5, as
    # for the span models' export in test_tf_model (measured up to 2.2e-6 here)
    np.testing.assert_allclose(served["logits"].numpy(), want, atol=1e-5, rtol=0)
