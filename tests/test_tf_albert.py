"""ALBERT on the TensorFlow path, in both layouts: variable paths are the TF1 checkpoints' names and
canonical names the PyTorch state dicts'; logits against transformers' AlbertForQuestionAnswering
(Google layout) and the float64 brightmart reference (factorized layout); loss and gradients
against cnbert.torch; per-application dropout of shared layers; TF1 checkpoints; model directories
exchanged with PyTorch and transformers; both trainers taking the same steps."""
import json

import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

import cnbert.tf as ctf
import cnbert.torch as cnbert_torch
from cnbert.checkpoints import CheckpointError, albert_tf_to_model, model_to_albert_tf, read_pretrained_config
from cnbert.config import AlbertConfig, BertConfig, ConfigError
from cnbert.tf import albert as tf_albert
from cnbert.tf import backend as tf_backend
from cnbert.tf import heads as tf_heads
from cnbert.tf import modeling as tf_modeling
from cnbert.tf.modeling import BertLayer, set_gradient_checkpointing
from cnbert.tokenization import bundled_vocab_path
from model_helpers import (hf_logits, our_logits, padded_arrays, padded_batch, randomise, train_in_both_frameworks,
                           write_tf_checkpoint)
from test_tf_model import assert_same_step, state_of  # gradients within 1e-5, as for BERT
from test_torch_albert import (FACTORIZED, FLOAT64_TOLERANCE, SIZES, brightmart_variables, hf_albert,
                               reference_outputs, write_brightmart_checkpoint)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GROUPS = dict(num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2)  # layer i -> group i // 2
CONFIGS = {
    "albert": AlbertConfig(**{**SIZES, **GROUPS}, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                           classifier_dropout=0.0, attention="eager"),
    "factorized_word": FACTORIZED.replace(attention="eager"),
}
LAYOUTS = list(CONFIGS)
LABELS = ("a", "b", "c")
PARITY_TOLERANCE = 1e-5    # fp32 against PyTorch / transformers, absolute, on logits of magnitude ~1
BF16_TOLERANCE = 1e-5      # bf16 against torch autocast bf16, absolute, on LayerNorm outputs of magnitude ~1-3


def task_models(config):
    """(TF model, PyTorch model) pairs of every ALBERT task class."""
    return [(ctf.AlbertForSpanExtraction(config), cnbert_torch.AlbertForSpanExtraction(config)),
            (ctf.AlbertForCJRC(config), cnbert_torch.AlbertForCJRC(config)),
            (ctf.AlbertForSequenceClassification(config, LABELS),
             cnbert_torch.AlbertForSequenceClassification(config, LABELS)),
            (ctf.AlbertForTokenClassification(config, LABELS),
             cnbert_torch.AlbertForTokenClassification(config, LABELS))]


def tf_outputs(model, batch=None, **kwargs):
    input_ids, attention_mask, token_type_ids = padded_arrays() if batch is None else batch
    out = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
    return {name: value.numpy() for name, value in out.items()}


def torch_outputs(model):
    with torch.no_grad():
        return {name: value.numpy() for name, value in model.eval()(*padded_batch()).items()}


def real_tokens():
    return padded_arrays()[1].astype(bool)


# ---- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_variable_paths_are_the_tf1_names_and_canonical_names_the_pytorch_state_dict(layout):
    config = CONFIGS[layout]
    encoder, reference = ctf.AlbertModel(config), cnbert_torch.AlbertModel(config)
    tf1_names = set(model_to_albert_tf(state_of(reference), layout))
    if layout == "factorized_word":  # brightmart's bare projection matrix is a bias-free dense layer's kernel
        tf1_names = tf1_names - {"bert/embeddings/word_embeddings_2"} | {"bert/embeddings/word_embeddings_2/kernel"}
    assert {v.path for v in encoder.weights} == tf1_names
    assert ({name: value.shape for name, value in ctf.canonical_weights(encoder).items()}
            == {name: tuple(t.shape) for name, t in reference.state_dict().items()})
    for model, torch_model in task_models(config):
        ours = {name: value.shape for name, value in ctf.canonical_weights(model).items()}
        assert ours == {name: tuple(t.shape) for name, t in torch_model.state_dict().items()}, type(model).__name__
        assert model.hf_architecture == torch_model.hf_architecture
        # a subclass of the BERT task model, as the trainer requires
        assert isinstance(model, getattr(tf_heads, type(model).__name__.replace("Albert", "Bert")))


def test_model_for_task_picks_albert_for_an_albert_config_in_both_layouts():
    for layout, config in CONFIGS.items():
        for task, model_class in (("drcd", ctf.AlbertForSpanExtraction), ("cjrc", ctf.AlbertForCJRC),
                                  ("xnli", ctf.AlbertForSequenceClassification),
                                  ("msra_ner", ctf.AlbertForTokenClassification)):
            model, report = tf_backend.create_model(task, config, None)
            assert type(model) is model_class and model.config.embedding_layout == layout and report is None
    with pytest.raises(ConfigError, match="AlbertModel needs an AlbertConfig, got BertConfig"):
        ctf.AlbertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                   intermediate_size=64))


# ---- forward parity -------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden_act", ["gelu_new", "gelu", "relu"])
def test_google_layout_logits_match_transformers(hidden_act):
    reference = hf_albert(**GROUPS, hidden_act=hidden_act)
    model = ctf.AlbertForSpanExtraction(CONFIGS["albert"].replace(hidden_act=hidden_act))
    report = ctf.load_canonical_weights(model, state_of(reference), allow_fresh_heads=False)
    assert report.initialised == [] and report.ignored == []
    got = tf_outputs(model)
    for name, want in zip(("start_logits", "end_logits"), hf_logits(reference)):
        assert want.abs().max() > 0.5, name  # logits big enough for the tolerance to mean something
        np.testing.assert_allclose(got[name], want.numpy(), atol=PARITY_TOLERANCE, rtol=0, err_msg=name)


def test_factorized_encoder_matches_the_float64_brightmart_reference():
    variables = brightmart_variables()
    sequence, pooled = reference_outputs(variables)
    encoder = ctf.AlbertModel(FACTORIZED)
    ctf.load_canonical_weights(encoder, albert_tf_to_model(variables, "factorized_word").weights)
    out = tf_outputs(encoder)
    real = real_tokens()
    assert np.abs(sequence[real]).max() > 1.0
    np.testing.assert_allclose(out["sequence_output"][real], sequence[real], atol=FLOAT64_TOLERANCE, rtol=0)
    np.testing.assert_allclose(out["pooled_output"], pooled, atol=FLOAT64_TOLERANCE, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_task_head_matches_pytorch(layout):
    for model, torch_model in task_models(CONFIGS[layout]):
        randomise(torch_model)
        ctf.load_canonical_weights(model, state_of(torch_model), allow_fresh_heads=False)
        got, want = tf_outputs(model), torch_outputs(torch_model)
        assert set(got) == set(want)
        for name in want:
            # a tagger's padded positions are compared too: both frameworks compute them alike
            assert np.abs(want[name]).max() > 0.05, name
            np.testing.assert_allclose(got[name], want[name], atol=PARITY_TOLERANCE, rtol=0,
                                       err_msg=f"{type(model).__name__} {name}")


def test_bf16_projects_brightmart_word_embeddings_in_half_precision_as_torch_autocast_does():
    """The factorized embeddings under bf16 against torch's autocast on identical weights (the
    layers after them round in other places in the two frameworks, so their outputs are not
    compared this tightly). Projecting in float32 instead differs by 4e-3."""
    reference = randomise(cnbert_torch.AlbertModel(FACTORIZED), seed=1)
    encoder = ctf.AlbertModel(FACTORIZED)
    ctf.load_canonical_weights(encoder, state_of(reference))
    input_ids, _, token_type_ids = padded_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = reference.embeddings(input_ids, token_type_ids).float().numpy()
    fp32 = encoder.embeddings(input_ids.numpy(), token_type_ids.numpy()).numpy()
    with tf_modeling.precision_scope(encoder, "bf16"):
        got = encoder.embeddings(input_ids.numpy(), token_type_ids.numpy()).numpy()
    assert got.dtype == np.float32 and np.abs(got - fp32).max() > 1e-3  # the projection really ran in bf16
    np.testing.assert_allclose(got, want, atol=BF16_TOLERANCE, rtol=0)


# ---- training -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_training_step_gives_the_pytorch_loss_and_gradients(layout):
    """Dropout off, identical weights, padding and ignored labels: the shared layers' gradients sum
    over their applications in both frameworks."""
    config = CONFIGS[layout]
    reference = randomise(cnbert_torch.AlbertForCJRC(config)).train()
    model = ctf.AlbertForCJRC(config)
    ctf.load_canonical_weights(model, state_of(reference), allow_fresh_heads=False)
    labels = {"start_positions": np.array([3, 5, -100]), "end_positions": np.array([4, -100, 2]),
              "answer_class": np.array([0, -100, 3])}
    loss = cnbert_torch.cjrc_loss(reference(*padded_batch()), *(torch.from_numpy(v) for v in labels.values()))
    loss.backward()
    want = {name: p.grad.numpy() for name, p in reference.named_parameters()}

    input_ids, attention_mask, token_type_ids = padded_arrays()
    with tf.GradientTape() as tape:
        outputs = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, training=True,
                        dropout_seed=[1, 2])
        tf_loss = ctf.cjrc_loss(outputs, **labels)
    assert_same_step(model, tape.gradient(tf_loss, model.trainable_variables), float(tf_loss), loss.item(), want)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_application_of_a_shared_layer_draws_its_own_dropout_masks(monkeypatch, layout):
    config = CONFIGS[layout].replace(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    site_seeds = []
    original = tf_modeling.dropout

    def recording_dropout(x, rate, seed, site):
        if seed is not None:
            site_seeds.append(tuple(tf.random.experimental.stateless_fold_in(seed, site).numpy()))
        return original(x, rate, seed, site)

    for module in (tf_modeling, tf_albert, tf_heads):
        monkeypatch.setattr(module, "dropout", recording_dropout)
    model = ctf.AlbertForCJRC(config)
    first = tf_outputs(model, training=True, dropout_seed=[3, 4])["start_logits"]
    # embeddings; three sites (attention probabilities, attention output, FFN output) per layer run;
    # the [CLS] state of the answer-class head
    assert len(site_seeds) == 1 + 3 * config.num_hidden_layers * config.inner_group_num + 1
    assert len(set(site_seeds)) == len(site_seeds)
    np.testing.assert_array_equal(tf_outputs(model, training=True, dropout_seed=[3, 4])["start_logits"], first)
    assert np.abs(tf_outputs(model, training=True, dropout_seed=[3, 5])["start_logits"] - first).max() > 1e-3
    site_seeds.clear()
    tf_outputs(model)
    assert site_seeds == []  # inference draws nothing


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradient_checkpointing_recomputes_each_application_with_the_same_masks(monkeypatch, layout):
    config = CONFIGS[layout].replace(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    model = ctf.AlbertForSpanExtraction(config)
    layer_class = tf_albert.AlbertLayerGroup if layout == "albert" else BertLayer
    calls = []
    original_call = layer_class.call
    monkeypatch.setattr(layer_class, "call", lambda self, *a, **k: calls.append(self.name) or original_call(self, *a, **k))
    input_ids, attention_mask, token_type_ids = padded_arrays()

    def loss_and_grads():
        calls.clear()
        with tf.GradientTape() as tape:
            outputs = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            training=True, dropout_seed=[5, 6])
            loss = ctf.span_loss(outputs, np.array([1, 2, 0]), np.array([3, 2, 0]))
        grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]
        return float(loss), grads, len(calls)

    plain_loss, plain_grads, plain_calls = loss_and_grads()
    set_gradient_checkpointing(model, True)
    loss, grads, recomputed_calls = loss_and_grads()
    assert plain_calls == config.num_hidden_layers and recomputed_calls == 2 * plain_calls
    assert loss == plain_loss
    for a, b in zip(grads, plain_grads):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_both_trainers_take_the_same_steps_on_a_factorized_albert_classifier():
    rng = np.random.default_rng(0)
    input_ids, attention_mask, token_type_ids = padded_arrays(lengths=(20, 13, 6, 17) * 6, seed=2)
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
              "labels": rng.integers(0, 3, len(input_ids))}
    train_in_both_frameworks("xnli", arrays, num_labels=3, config=CONFIGS["factorized_word"].replace(
        num_hidden_layers=2, initializer_range=0.02))


# ---- checkpoints and directories ------------------------------------------------------------------

@pytest.mark.slow
def test_brightmart_tf1_checkpoint_loads_strictly_and_matches_the_reference(tmp_path):
    variables = brightmart_variables()
    pretraining = {"cls/predictions/output_bias": np.zeros(SIZES["vocab_size"], np.float32)}
    directory = write_brightmart_checkpoint(tmp_path / "albert_large_zh", {**variables, **pretraining})
    config = read_pretrained_config(directory)
    model, report = tf_backend.create_model("cjrc", config, str(directory))
    assert type(model) is ctf.AlbertForCJRC
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias", "answer_class.weight", "answer_class.bias"]
    assert report.ignored == ["albert.pooler.dense.bias", "albert.pooler.dense.weight"]
    sequence, _ = reference_outputs(variables)
    real = real_tokens()
    got = tf_outputs(model.bert)["sequence_output"]
    np.testing.assert_allclose(got[real], sequence[real], atol=FLOAT64_TOLERANCE, rtol=0)

    broken = dict(variables)
    broken["bert/encoder/layer_shared/intermediate/dense/kernel"] = np.zeros((64, 100), np.float32)
    write_brightmart_checkpoint(tmp_path / "broken", broken)
    with pytest.raises(CheckpointError,
                       match=r"albert\.encoder\.layer_shared\.intermediate\.dense\.weight: the checkpoint has "
                             r"shape \(100, 64\) but the model expects \(128, 64\)"):
        tf_backend.create_model("cjrc", config, str(tmp_path / "broken"))


@pytest.mark.slow
def test_google_albert_tf1_checkpoint_loads_like_transformers(tmp_path):
    reference = hf_albert(**GROUPS)
    variables = model_to_albert_tf({name.removeprefix("albert."): t.numpy() for name, t in
                                    reference.state_dict().items() if name.startswith("albert.")}, "albert")
    google_config = {"attention_probs_dropout_prob": 0, "hidden_act": "gelu_new", "hidden_dropout_prob": 0,
                     "embedding_size": 16, "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
                     "max_position_embeddings": 48, "num_attention_heads": 4, "type_vocab_size": 2,
                     "vocab_size": SIZES["vocab_size"], **GROUPS}
    directory = write_tf_checkpoint(tmp_path, variables, google_config, prefix="model.ckpt-best",
                                    config_name="albert_config.json")
    model, report = tf_backend.create_model("cmrc2018", read_pretrained_config(directory), str(directory))
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias"] and report.ignored == []
    model.qa_outputs.kernel.assign(reference.qa_outputs.weight.detach().numpy().T)
    model.qa_outputs.bias.assign(reference.qa_outputs.bias.detach().numpy())
    got = tf_outputs(model)
    for name, want in zip(("start_logits", "end_logits"), hf_logits(reference)):
        np.testing.assert_allclose(got[name], want.numpy(), atol=PARITY_TOLERANCE, rtol=0, err_msg=name)


def test_tf_saved_google_layout_model_loads_in_transformers_and_pytorch(tmp_path):
    model = ctf.AlbertForSpanExtraction(CONFIGS["albert"])
    ctf.load_canonical_weights(model, state_of(hf_albert(**GROUPS)), allow_fresh_heads=False)
    directory = ctf.save_pretrained(model, tmp_path / "tf_albert", bundled_vocab_path())
    saved = json.loads((directory / "config.json").read_text())
    assert saved["architectures"] == ["AlbertForQuestionAnswering"] and saved["model_type"] == "albert"
    want = tf_outputs(model)
    hf, info = transformers.AlbertForQuestionAnswering.from_pretrained(directory, attn_implementation="eager",
                                                                        output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch_model, report = cnbert_torch.load_for_task("drcd", directory, allow_fresh_heads=False, attention="eager")
    assert type(torch_model) is cnbert_torch.AlbertForSpanExtraction and report.ignored == []
    for got in (hf_logits(hf), our_logits(torch_model)):
        for name, value in zip(("start_logits", "end_logits"), got):
            np.testing.assert_allclose(value.numpy(), want[name], atol=PARITY_TOLERANCE, rtol=0, err_msg=name)


def test_factorized_classifier_directories_cross_between_frameworks_with_their_labels(tmp_path):
    reference = randomise(cnbert_torch.AlbertForSequenceClassification(CONFIGS["factorized_word"], LABELS))
    directory = cnbert_torch.save_pretrained(reference, tmp_path / "torch", bundled_vocab_path())
    with pytest.raises(CheckpointError, match="labels"):
        ctf.load_finetuned(directory, "xnli")  # trained on other labels than XNLI's
    model = ctf.AlbertForSequenceClassification(CONFIGS["factorized_word"], LABELS)
    ctf.load_canonical_weights(model, ctf.read_canonical_weights(directory)[0], allow_fresh_heads=False)
    want = torch_outputs(reference)["logits"]
    np.testing.assert_allclose(tf_outputs(model)["logits"], want, atol=PARITY_TOLERANCE, rtol=0)

    back = ctf.save_pretrained(model, tmp_path / "tf", bundled_vocab_path())
    saved = json.loads((back / "config.json").read_text())
    assert saved["architectures"] == ["CnbertFactorizedAlbertForSequenceClassification"]
    assert saved["id2label"] == {"0": "a", "1": "b", "2": "c"}
    torch_model = cnbert_torch.AlbertForSequenceClassification(read_pretrained_config(back), LABELS)
    cnbert_torch.load_pretrained(torch_model, back, allow_fresh_heads=False)
    np.testing.assert_allclose(torch_outputs(torch_model)["logits"], want, atol=PARITY_TOLERANCE, rtol=0)


def test_exported_factorized_cjrc_model_serves_its_logits(tmp_path):
    model = ctf.AlbertForCJRC(CONFIGS["factorized_word"].replace(initializer_range=0.2))
    batch = tuple(array.astype(np.int32) for array in padded_arrays())
    ctf.export_saved_model(model, tmp_path / "saved")
    serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    served = serve(**{name: tf.constant(array) for name, array in
                      zip(("input_ids", "attention_mask", "token_type_ids"), batch)})
    want = tf_outputs(model, batch)
    assert set(served) == set(want) == {"start_logits", "end_logits", "class_logits"}
    for name in want:
        assert np.abs(want[name]).max() > 0.05, name
        # the served graph sums in another order than eager code (as in test_tf_model's export test)
        np.testing.assert_allclose(served[name].numpy(), want[name], atol=1e-5, rtol=0, err_msg=name)
