"""The Keras model against the PyTorch model (and transformers): same logits, same loss and
gradients, strict weight exchange both ways, Google names, HF directories, SavedModel export."""
import subprocess
import sys
import types

import numpy as np
import pytest

import keras
import tensorflow as tf
import torch
import transformers
import cnbert.tf as ctf

from cnbert.checkpoints import CheckpointError, bert_parameter_shapes, hf_to_google  # noqa: E402
from cnbert.config import AlbertConfig, BertConfig  # noqa: E402
from cnbert.tf import backend  # noqa: E402
from cnbert.tf.modeling import BertLayer, BertResidualOutput, Linear, set_gradient_checkpointing  # noqa: E402
from cnbert.tokenization import bundled_vocab_path  # noqa: E402
import cnbert.torch as cnbert_torch  # noqa: E402
from model_helpers import google_config, padded_arrays, randomise, write_tf_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)
CONFIG = BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attention="eager")
LOGIT_TOLERANCE = 1e-5     # fp32, absolute, on logits of magnitude ~1-10
GRADIENT_TOLERANCE = 1e-5  # fp32, absolute, one backward pass (measured: < 3e-7)


def state_of(torch_model):
    return {name: t.detach().numpy().copy() for name, t in torch_model.state_dict().items()}


def torch_outputs(model, input_ids, attention_mask, token_type_ids):
    with torch.no_grad():
        out = model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask), torch.from_numpy(token_type_ids))
    if isinstance(out, dict):
        return {k: v.numpy() for k, v in out.items()}
    return {"sequence_output": out.sequence_output.numpy(), "pooled_output": out.pooled_output.numpy()}


def tf_outputs(model, input_ids, attention_mask, token_type_ids, **kwargs):
    out = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
    return {k: v.numpy() for k, v in out.items()}


def assert_outputs_close(got, want, tolerance=LOGIT_TOLERANCE):
    assert set(got) == set(want)
    for name in want:
        assert np.abs(want[name]).max() > 0.05, name  # thousands of times the tolerance
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=tolerance, err_msg=name)


# ---- names and layout ---------------------------------------------------------------------------

def test_variable_paths_are_google_checkpoint_names_and_canonical_names_are_pytorch_state_dict_names():
    encoder = ctf.BertModel(CONFIG)
    google = set(hf_to_google({name: np.zeros(0) for name in bert_parameter_shapes(CONFIG)}))
    assert {v.path for v in encoder.weights} == google
    assert "bert/encoder/layer_1/attention/self/query/kernel" in google
    assert encoder.get_layer("embeddings").word_embeddings.shape == (21128, 32)

    for tf_class, torch_class in ((ctf.BertForSpanExtraction, cnbert_torch.BertForSpanExtraction),
                                  (ctf.BertForCJRC, cnbert_torch.BertForCJRC)):
        model = tf_class(CONFIG)
        paths = {v.path for v in model.weights}
        assert paths - google == {f"{head}/{leaf}" for head in ("qa_outputs", "answer_class")[:len(model.head_prefixes)]
                                  for leaf in ("kernel", "bias")}
        ours = {name: value.shape for name, value in ctf.canonical_weights(model).items()}
        assert ours == {name: tuple(t.shape) for name, t in torch_class(CONFIG).state_dict().items()}


def test_fresh_weights_follow_the_bert_initialisation():
    model = ctf.BertForCJRC(CONFIG.replace(initializer_range=0.05))
    state = ctf.canonical_weights(model)
    query = state["bert.encoder.layer.0.attention.self.query.weight"]
    assert abs(query.std() - 0.05) < 0.005 and abs(query.mean()) < 0.005
    assert np.all(state["qa_outputs.bias"] == 0) and np.all(state["answer_class.bias"] == 0)
    assert np.all(state["bert.embeddings.LayerNorm.weight"] == 1)
    assert np.all(state["bert.embeddings.word_embeddings.weight"][0] == 0)  # pad_token_id row
    assert np.abs(state["bert.embeddings.word_embeddings.weight"][1]).max() > 0
    # three independent draws: a shared Keras initializer would repeat its values in every table
    words, positions, types = (state[f"bert.embeddings.{table}_embeddings.weight"]
                               for table in ("word", "position", "token_type"))
    rows = positions.shape[0]
    assert not np.allclose(words[1:rows], positions[1:rows]) and not np.allclose(types[0], positions[0])
    assert not np.allclose(types[1], words[1])


def test_seeded_fresh_models_repeat_and_unknown_tasks_are_refused():
    backend.seed_everything(3)
    first, report = backend.create_model("cjrc", CONFIG, None)
    backend.seed_everything(3)
    again, _ = backend.create_model("cjrc", CONFIG, None)
    backend.seed_everything(4)
    other, _ = backend.create_model("cjrc", CONFIG, None)
    assert report is None
    first, again, other = (ctf.canonical_weights(m) for m in (first, again, other))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
    assert np.abs(first["answer_class.weight"] - other["answer_class.weight"]).max() > 1e-3
    with pytest.raises(ValueError, match="unknown task 'squad'"):
        backend.create_model("squad", CONFIG, None)


# ---- forward parity -----------------------------------------------------------------------------

@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_encoder_and_pooler_match_pytorch_with_padding(hidden_act):
    config = CONFIG.replace(hidden_act=hidden_act)
    reference = randomise(cnbert_torch.BertModel(config))
    model = ctf.BertModel(config)
    report = ctf.load_canonical_weights(model, state_of(reference))
    assert report.initialised == [] and report.ignored == []
    batch = padded_arrays()
    assert_outputs_close(tf_outputs(model, *batch), torch_outputs(reference, *batch))


@pytest.mark.parametrize("task", ["drcd", "cjrc"])
def test_task_heads_match_pytorch_with_padding(task):
    torch_class = cnbert_torch.BertForCJRC if task == "cjrc" else cnbert_torch.BertForSpanExtraction
    reference = randomise(torch_class(CONFIG))
    model, _ = backend.create_model(task, CONFIG, None)
    ctf.load_canonical_weights(model, state_of(reference), allow_fresh_heads=False)
    batch = padded_arrays()
    assert_outputs_close(tf_outputs(model, *batch), torch_outputs(reference, *batch))


def test_padding_does_not_leak_into_real_tokens_and_defaults_are_zero_token_types():
    model = ctf.BertForSpanExtraction(CONFIG.replace(initializer_range=0.2))
    input_ids, attention_mask, token_type_ids = padded_arrays()
    changed = np.where(attention_mask == 0, 777, input_ids)
    before = tf_outputs(model, input_ids, attention_mask, token_type_ids)["start_logits"]
    after = tf_outputs(model, changed, attention_mask, token_type_ids)["start_logits"]
    unmasked = tf_outputs(model, changed, None, token_type_ids)["start_logits"]
    real = attention_mask.astype(bool)
    np.testing.assert_allclose(after[real], before[real], atol=1e-6, rtol=0)
    assert np.abs(unmasked[real] - before[real]).max() > 1e-3  # the mask is what kept them equal
    np.testing.assert_array_equal(tf_outputs(model, input_ids, attention_mask, None)["start_logits"],
                                  tf_outputs(model, input_ids, attention_mask, np.zeros_like(input_ids))["start_logits"])
    # a boolean mask, or a float one, means what the integer mask does (as in the torch model)
    for same_mask in (attention_mask.astype(bool), attention_mask.astype(np.float32)):
        np.testing.assert_array_equal(tf_outputs(model, input_ids, same_mask, token_type_ids)["start_logits"], before)


def test_bad_shapes_raise():
    model = ctf.BertModel(CONFIG)
    with pytest.raises(ValueError, match="sequence length 41 exceeds max_position_embeddings 40"):
        model(np.ones((1, 41), np.int32))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 5\) but input_ids has \(1, 6\)"):
        model(np.ones((1, 6), np.int32), attention_mask=np.ones((1, 5), np.int32))


def test_dropout_is_seeded_per_step_and_off_in_inference():
    model = ctf.BertForSpanExtraction(CONFIG.replace(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3))
    batch = padded_arrays()
    first = tf_outputs(model, *batch, training=True, dropout_seed=[7, 1])["start_logits"]
    again = tf_outputs(model, *batch, training=True, dropout_seed=[7, 1])["start_logits"]
    other = tf_outputs(model, *batch, training=True, dropout_seed=[7, 2])["start_logits"]
    inference = tf_outputs(model, *batch)["start_logits"]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3 and np.abs(first - inference).max() > 1e-3
    np.testing.assert_array_equal(inference, tf_outputs(model, *batch, dropout_seed=[7, 1])["start_logits"])


def test_bf16_policy_runs_dense_layers_in_bf16_and_keeps_layer_norm_and_outputs_in_float32():
    """bf16 has an 8-bit mantissa: through 2 layers the logits stay within 5 % of the largest
    |fp32 logit| (the PyTorch model's autocast bound)."""
    model = ctf.BertForSpanExtraction(CONFIG.replace(initializer_range=0.2))
    batch = padded_arrays()
    fp32 = tf_outputs(model, *batch)
    ctf.set_precision(model, "bf16")
    layers = list(model._flatten_layers())
    # the head stays float32: bf16 logits would tie
    assert {layer.compute_dtype for layer in layers if isinstance(layer, Linear) and layer is not model.qa_outputs} \
        == {"bfloat16"}
    assert model.qa_outputs.compute_dtype == "float32"
    norms = [layer for layer in layers if layer.name == "LayerNorm"]
    assert len(norms) == 5 and {layer.compute_dtype for layer in norms} == {"float32"}
    assert {v.dtype for v in model.weights} == {"float32"}
    bf16 = tf_outputs(model, *batch)
    ctf.set_precision(model, "fp32")
    scale = np.abs(fp32["start_logits"]).max()
    for name in fp32:
        assert bf16[name].dtype == np.float32
        error = np.abs(bf16[name] - fp32[name]).max()
        assert 0 < error < 0.05 * scale, (name, error, scale)
    np.testing.assert_array_equal(tf_outputs(model, *batch)["start_logits"], fp32["start_logits"])


@pytest.fixture
def set_global_policy():
    """keras.mixed_precision.set_global_policy, with the global policy restored after the test."""
    before = keras.mixed_precision.global_policy()
    try:
        yield keras.mixed_precision.set_global_policy
    finally:
        keras.mixed_precision.set_global_policy(before)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_global_keras_policy_changes_nothing_set_precision_alone_chooses(policy, set_global_policy, monkeypatch):
    """A model built under a global mixed-precision policy gives exactly the logits of one built
    without it, in fp32 and in bf16, and under bf16 its residual stream and LayerNorms stay float32."""
    config = CONFIG.replace(initializer_range=0.2)
    batch = padded_arrays()
    reference = ctf.BertForCJRC(config)
    want = {}
    for precision in ("fp32", "bf16"):
        ctf.set_precision(reference, precision)
        want[precision] = tf_outputs(reference, *batch)

    set_global_policy(policy)
    model = ctf.BertForCJRC(config)
    for variable, value in zip(model.weights, reference.weights, strict=True):
        assert variable.path == value.path
        variable.assign(value)
    assert {v.dtype for v in model.weights} == {"float32"}

    ctf.set_precision(model, "fp32")
    assert {layer.dtype_policy.name for layer in model._flatten_layers()} == {"float32"}
    got = tf_outputs(model, *batch)
    for name in want["fp32"]:
        np.testing.assert_array_equal(got[name], want["fp32"][name], err_msg=name)

    seen = []  # (residual dtype, LayerNorm output dtype) of every residual block
    original_call = BertResidualOutput.call

    def recording_call(self, hidden_states, residual, seed=None):
        output = original_call(self, hidden_states, residual, seed)
        seen.append((residual.dtype, output.dtype))
        return output

    monkeypatch.setattr(BertResidualOutput, "call", recording_call)
    ctf.set_precision(model, "bf16")
    layers = list(model._flatten_layers())
    heads = [model.qa_outputs, model.answer_class]  # float32: bf16 logits would tie
    assert {layer.compute_dtype for layer in layers if isinstance(layer, Linear) and layer not in heads} == {"bfloat16"}
    assert {layer.compute_dtype for layer in layers if not isinstance(layer, Linear) or layer in heads} == {"float32"}
    got = tf_outputs(model, *batch)
    assert len(seen) == 2 * config.num_hidden_layers and set(seen) == {(tf.float32, tf.float32)}
    for name in want["bf16"]:
        assert np.abs(want["bf16"][name] - want["fp32"][name]).max() > 0, name  # bf16 really ran
        np.testing.assert_array_equal(got[name], want["bf16"][name], err_msg=name)


# ---- losses and gradients -----------------------------------------------------------------------

@pytest.mark.parametrize("task", ["drcd", "cjrc"])
def test_one_training_step_gives_the_pytorch_loss_and_gradients(task):
    """Dropout off, identical weights and batch (with padding and ignored labels)."""
    torch_class = cnbert_torch.BertForCJRC if task == "cjrc" else cnbert_torch.BertForSpanExtraction
    reference = randomise(torch_class(CONFIG)).train()
    model = ctf.BertForCJRC(CONFIG) if task == "cjrc" else ctf.BertForSpanExtraction(CONFIG)
    ctf.load_canonical_weights(model, state_of(reference), allow_fresh_heads=False)
    input_ids, attention_mask, token_type_ids = padded_arrays()
    labels = {"start_positions": np.array([3, 5, -100]), "end_positions": np.array([4, -100, 2]),
              "answer_class": np.array([0, -100, 3])}

    out = reference(torch.from_numpy(input_ids), torch.from_numpy(attention_mask), torch.from_numpy(token_type_ids))
    torch_labels = {k: torch.from_numpy(v) for k, v in labels.items()}
    if task == "cjrc":
        loss = cnbert_torch.cjrc_loss(out, torch_labels["start_positions"], torch_labels["end_positions"],
                                      torch_labels["answer_class"])
    else:
        loss = cnbert_torch.span_loss(out, torch_labels["start_positions"], torch_labels["end_positions"])
    loss.backward()
    want_grads = {name: p.grad.numpy() for name, p in reference.named_parameters()}

    with tf.GradientTape() as tape:
        outputs = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, training=True,
                        dropout_seed=[1, 2])
        tf_loss = (ctf.cjrc_loss(outputs, **labels) if task == "cjrc"
                   else ctf.span_loss(outputs, labels["start_positions"], labels["end_positions"]))
    assert_same_step(model, tape.gradient(tf_loss, model.trainable_variables), float(tf_loss), loss.item(),
                     want_grads)


def assert_same_step(model, grads, tf_loss, torch_loss, want_grads):
    """The TF step's loss and gradients (by canonical name) are the PyTorch step's: loss to 1e-6
    relative, gradients within GRADIENT_TOLERANCE, and none for the padding row of the word table."""
    got_grads = gradients_by_canonical_name(model, grads)
    assert set(got_grads) == set(want_grads)
    assert tf_loss == pytest.approx(torch_loss, rel=1e-6)
    worst = max(np.abs(got_grads[name] - want_grads[name]).max() for name in want_grads)
    assert worst < GRADIENT_TOLERANCE
    assert max(np.abs(g).max() for g in want_grads.values()) > 0.02  # gradients large against the tolerance
    prefix = model.bert.canonical_prefix
    np.testing.assert_array_equal(got_grads[f"{prefix}embeddings.word_embeddings.weight"][0], 0)  # padding row


def gradients_by_canonical_name(model, grads):
    by_variable = {id(v): tf.convert_to_tensor(g).numpy() for v, g in zip(model.trainable_variables, grads)}
    return {name: by_variable[id(slot.variable)].T if slot.transposed else by_variable[id(slot.variable)]
            for name, slot in ctf.canonical_variables(model).items()}


def test_span_and_cjrc_losses_treat_ignored_terms_like_pytorch():
    rng = np.random.default_rng(0)
    outputs = {"start_logits": rng.normal(size=(4, 6)), "end_logits": rng.normal(size=(4, 6)),
               "class_logits": rng.normal(size=(4, 4))}
    labels = [np.array([1, -100, 2, 0]), np.array([2, 3, -100, 0]), np.array([-100, -100, 1, 3])]
    torch_outputs_ = {k: torch.from_numpy(v) for k, v in outputs.items()}
    for reduction in ("mean", "none"):
        want = cnbert_torch.cjrc_loss(torch_outputs_, *map(torch.from_numpy, labels), reduction=reduction).numpy()
        got = ctf.cjrc_loss({k: tf.constant(v) for k, v in outputs.items()}, *labels, reduction=reduction).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6)
    all_ignored = ctf.span_loss(outputs, np.full(4, -100), np.full(4, -100))
    assert float(all_ignored) == 0.0
    with pytest.raises(ValueError, match=r"end_positions holds \[6\]"):
        ctf.span_loss(outputs, np.zeros(4, int), np.array([0, 6, 1, 1]))


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(monkeypatch):
    model = ctf.BertForCJRC(CONFIG.replace(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2))
    input_ids, attention_mask, token_type_ids = padded_arrays()
    calls = []
    original_call = BertLayer.call
    monkeypatch.setattr(BertLayer, "call", lambda self, *a, **k: calls.append(self.name) or original_call(self, *a, **k))

    def loss_and_grads():
        calls.clear()
        with tf.GradientTape() as tape:
            outputs = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            training=True, dropout_seed=[5, 6])  # dropout on: recomputation must redraw the same masks
            loss = ctf.cjrc_loss(outputs, np.array([1, 2, 0]), np.array([3, 2, 0]), np.array([0, 1, 3]))
        grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]
        return float(loss), grads, list(calls)

    plain_loss, plain_grads, plain_calls = loss_and_grads()
    set_gradient_checkpointing(model, True)
    loss, grads, recomputed_calls = loss_and_grads()
    assert plain_calls == ["layer_0", "layer_1"]
    assert sorted(recomputed_calls) == ["layer_0", "layer_0", "layer_1", "layer_1"]  # forward + recomputation
    assert loss == plain_loss
    for a, b in zip(grads, plain_grads):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


# ---- checkpoints and directories ----------------------------------------------------------------

def test_weight_exchange_is_strict_and_names_the_tensor():
    model = ctf.BertForSpanExtraction(CONFIG)
    state = ctf.canonical_weights(randomise_tf(ctf.BertForSpanExtraction(CONFIG)))
    ctf.load_canonical_weights(model, state, allow_fresh_heads=False)
    for name, value in ctf.canonical_weights(model).items():
        np.testing.assert_array_equal(value, state[name])

    missing = {k: v for k, v in state.items() if k != "bert.encoder.layer.1.output.dense.bias"}
    with pytest.raises(CheckpointError, match=r"missing weights \[bert\.encoder\.layer\.1\.output\.dense\.bias\]"):
        ctf.load_canonical_weights(model, missing)
    wrong = dict(state, **{"bert.encoder.layer.0.attention.self.key.weight": np.zeros((32, 31), np.float32)})
    with pytest.raises(CheckpointError, match=r"attention\.self\.key\.weight: the checkpoint has shape \(32, 31\) "
                                              r"but the model expects \(32, 32\)"):
        ctf.load_canonical_weights(model, wrong)
    with pytest.raises(CheckpointError, match=r"unexpected keys \[bert\.encoder\.layer\.2\.output\.dense\.bias\]"):
        ctf.load_canonical_weights(model, dict(state, **{"bert.encoder.layer.2.output.dense.bias": np.zeros(32)}))
    headless = {k: v for k, v in state.items() if not k.startswith("qa_outputs.")}
    assert ctf.load_canonical_weights(model, headless).initialised == ["qa_outputs.weight", "qa_outputs.bias"]
    with pytest.raises(CheckpointError, match=r"missing weights \[qa_outputs\.weight, qa_outputs\.bias\]"):
        ctf.load_canonical_weights(model, headless, allow_fresh_heads=False)


def randomise_tf(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(np.float32))
    return model


def test_google_tf1_checkpoint_loads_by_name_through_create_model(tmp_path):
    reference = randomise(cnbert_torch.BertForSpanExtraction(CONFIG))
    variables = hf_to_google({name.removeprefix("bert."): t.numpy() for name, t in reference.state_dict().items()
                              if name.startswith("bert.")})
    variables["bert/embeddings/word_embeddings/adam_m"] = np.zeros((21128, 32), np.float32)
    variables["cls/predictions/output_bias"] = np.zeros(21128, np.float32)
    write_tf_checkpoint(tmp_path, variables, google_config(CONFIG), "bert_model.ckpt", "bert_config.json")

    model, report = backend.create_model("cmrc2018", CONFIG, str(tmp_path), bundled_vocab_path())
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias"]
    assert report.source.endswith("bert_model.ckpt")
    model.qa_outputs.kernel.assign(reference.qa_outputs.weight.detach().numpy().T)
    model.qa_outputs.bias.assign(reference.qa_outputs.bias.detach().numpy())
    batch = padded_arrays()
    assert_outputs_close(tf_outputs(model, *batch), torch_outputs(reference, *batch))

    # a mis-shaped variable in the TF checkpoint is named
    with pytest.raises(CheckpointError, match=r"position_embeddings\.weight: the checkpoint has shape \(40, 32\) "
                                              r"but the model expects \(64, 32\) \(config max_position_embeddings=64"):
        backend.create_model("cmrc2018", CONFIG.replace(max_position_embeddings=64), str(tmp_path), None)


@pytest.mark.parametrize("task", ["drcd", "cjrc"])
def test_tf_fine_tuned_directory_loads_in_pytorch_and_back(tmp_path, task):
    model = randomise_tf(backend.create_model(task, CONFIG, None)[0])
    directory = backend.save_pretrained(model, tmp_path / "tf_model", bundled_vocab_path())
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["tf_model"]  # no staging directory left behind
    torch_class = cnbert_torch.BertForCJRC if task == "cjrc" else cnbert_torch.BertForSpanExtraction
    torch_model, report = cnbert_torch.from_pretrained(torch_class, directory, attention="eager")
    assert report.initialised == [] and report.ignored == []
    batch = padded_arrays()
    want = tf_outputs(model, *batch)
    assert_outputs_close(torch_outputs(torch_model.eval(), *batch), want)
    if task == "drcd":
        hf = transformers.BertForQuestionAnswering.from_pretrained(directory, attn_implementation="eager").eval()
        with torch.no_grad():
            out = hf(input_ids=torch.from_numpy(batch[0]), attention_mask=torch.from_numpy(batch[1]),
                     token_type_ids=torch.from_numpy(batch[2]))
        assert_outputs_close({"start_logits": out.start_logits.numpy(), "end_logits": out.end_logits.numpy()}, want)

    # and a PyTorch-saved directory (safetensors, then pytorch_model.bin) loads back into TF
    cnbert_torch.save_pretrained(torch_model, tmp_path / "torch_model", bundled_vocab_path())
    assert_outputs_close(tf_outputs(backend.load_finetuned(tmp_path / "torch_model", task), *batch), want)
    (tmp_path / "torch_model" / "model.safetensors").unlink()
    torch.save(torch_model.state_dict(), tmp_path / "torch_model" / "pytorch_model.bin")
    assert_outputs_close(tf_outputs(backend.load_finetuned(tmp_path / "torch_model", task), *batch), want)


def test_a_fine_tuned_model_must_carry_its_task_heads(tmp_path):
    # as the PyTorch side: an encoder directory may start a fine-tuning run with fresh heads, but is
    # no fine-tuned model to answer with
    ctf.save_pretrained(ctf.BertModel(CONFIG), tmp_path / "encoder", bundled_vocab_path())
    assert ctf.load_pretrained(ctf.BertForSpanExtraction(CONFIG), tmp_path / "encoder").initialised == [
        "qa_outputs.weight", "qa_outputs.bias"]
    with pytest.raises(CheckpointError, match="qa_outputs.weight"):
        backend.load_finetuned(tmp_path / "encoder", "cmrc2018")


@pytest.mark.parametrize("config", [CONFIG.replace(hidden_act="quick_gelu", layer_norm_eps=1e-5, classifier_dropout=0.2),
                                    AlbertConfig(**TINY, embedding_size=16, num_hidden_groups=2),
                                    AlbertConfig(**TINY, embedding_size=16, embedding_layout="factorized_word")],
                         ids=["bert", "albert", "factorized_albert"])
# Keras's own saving code, not cnbert's, hands numpy a tensor this way (Keras 3.15, NumPy 2)
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_get_config_rebuilds_each_model_and_keras_files_round_trip(tmp_path, config):
    """keras-hub's convention: get_config is the constructor's arguments (JSON), from_config rebuilds
    the architecture, and Keras's own format saves and loads the whole model."""
    import json
    input_ids, attention_mask, token_type_ids = padded_arrays()
    encoder = (ctf.AlbertModel if isinstance(config, AlbertConfig) else ctf.BertModel)(config, add_pooling_layer=False)
    models = [encoder] + [backend.create_model(task, config, None)[0]
                          for task in ("cmrc2018", "cjrc", "lcqmc", "msra_ner")]
    set_gradient_checkpointing(models[2], True)
    for model in models:
        values = json.loads(json.dumps(model.get_config()))
        rebuilt = type(model).from_config(values)
        assert type(rebuilt) is type(model) and rebuilt.config == model.config
        assert rebuilt.get_config() == values and [v.path for v in rebuilt.weights] == [v.path for v in model.weights]
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(model) and loaded.get_config() == values
        assert getattr(loaded, "labels", None) == getattr(model, "labels", None)
        want = tf_outputs(model, input_ids, attention_mask, token_type_ids)
        assert set(want) == set(tf_outputs(rebuilt, input_ids, attention_mask, token_type_ids))
        for name, got in tf_outputs(loaded, input_ids, attention_mask, token_type_ids).items():
            np.testing.assert_array_equal(got, want[name], err_msg=f"{type(model).__name__} {name}")
    assert models[2].get_config()["gradient_checkpointing"] and not models[1].get_config()["gradient_checkpointing"]
    assert models[3].get_config()["labels"] == ["0", "1"] and models[0].get_config()["add_pooling_layer"] is False


def test_the_optimizer_deserializes_as_cnbert_s_own():
    """Keras would otherwise rebuild its own AdamW, which adds epsilon elsewhere (cnbert.tf.optim)."""
    from cnbert.tf.optim import AdamW
    optimizer = AdamW(learning_rate=1e-3, weight_decay=0.01, epsilon=1e-8)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is AdamW and (again.weight_decay, again.epsilon) == (0.01, 1e-8)


def test_saved_model_serving_signature_reproduces_the_logits(tmp_path):
    model = randomise_tf(ctf.BertForCJRC(CONFIG))
    ctf.set_precision(model, "bf16")  # as a mixed-precision run leaves it: the export still computes in fp32
    directory = backend.export_saved_model(model, tmp_path / "served")
    # and the model is left as it was
    assert next(layer for layer in model._flatten_layers() if layer.name == "query").compute_dtype == "bfloat16"
    ctf.set_precision(model, "fp32")
    assert (directory / "saved_model.pb").is_file()
    serve = tf.saved_model.load(str(directory)).signatures["serving_default"]
    assert set(serve.structured_input_signature[1]) == {"input_ids", "token_type_ids", "attention_mask"}
    input_ids, attention_mask, token_type_ids = padded_arrays(seq_length=12)
    got = serve(input_ids=tf.constant(input_ids, tf.int32), token_type_ids=tf.constant(token_type_ids, tf.int32),
                attention_mask=tf.constant(attention_mask, tf.int32))
    assert_outputs_close({k: v.numpy() for k, v in got.items()}, tf_outputs(model, input_ids, attention_mask,
                                                                            token_type_ids), tolerance=1e-6)


# ---- installation check -------------------------------------------------------------------------

def test_missing_or_wrong_tensorflow_gives_one_clear_import_error(monkeypatch):
    from cnbert.tf import _check_installation

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r"needs TensorFlow >= 2.16, which cannot be imported .*install cnbert's tf-cpu "
                                           r"extra, or tf-gpu for NVIDIA GPUs"):
        _check_installation()
    monkeypatch.setitem(sys.modules, "tensorflow", types.SimpleNamespace(__version__="2.15.1"))
    with pytest.raises(ImportError, match=r"needs TensorFlow >= 2.16 \(Keras 3\), found 2.15.1"):
        _check_installation()
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    fake_keras = types.SimpleNamespace(__version__="3.15.1", backend=types.SimpleNamespace(backend=lambda: "jax"))
    monkeypatch.setitem(sys.modules, "keras", fake_keras)
    with pytest.raises(ImportError, match="Keras was started with the 'jax' backend"):
        _check_installation()


def test_framework_neutral_modules_do_not_import_tensorflow():
    code = ("import sys, cnbert.config, cnbert.checkpoints, cnbert.training, cnbert.tokenization; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_albert_tf1_checkpoint_does_not_load_into_the_bert_model(tmp_path):
    variables = {"bert/encoder/layer_shared/attention/self/query/kernel": np.zeros((32, 32), np.float32),
                 "bert/encoder/layer_shared/attention/self/query/bias": np.zeros(32, np.float32)}
    write_tf_checkpoint(tmp_path, variables, {}, "albert_model.ckpt", "albert_config.json")
    with pytest.raises(CheckpointError, match=r"albert_model.ckpt: does not fit the model: missing weights "
                                              r"\[embeddings\.word_embeddings\.weight, .*unexpected keys "
                                              r"\[encoder\.layer_shared\.attention\.self\.query\.bias"):
        ctf.load_pretrained(ctf.BertModel(CONFIG), tmp_path / "albert_model.ckpt")


def test_fp16_attention_scores_overflow_only_where_the_scaled_ones_would():
    # every q.k is 16 x 70 x 70 = 78400 > 65504, the largest fp16; scaled by 1/4 it is not
    from cnbert.tf.modeling import BertSelfAttention

    layer = BertSelfAttention(CONFIG.replace(num_attention_heads=2), site=1)
    layer.build((None, None, CONFIG.hidden_size))
    for dense in (layer.query, layer.key):
        dense.kernel.assign(np.zeros(dense.kernel.shape, np.float32))
        dense.bias.assign(np.full(dense.bias.shape, 70.0, np.float32))
    ctf.set_precision(layer, "fp16")
    hidden = tf.random.stateless_normal((1, 3, CONFIG.hidden_size), seed=[0, 1])
    out = layer(hidden, None).numpy()
    assert np.isfinite(out).all()
    # equal scores: every query attends evenly to the three values
    np.testing.assert_allclose(out, np.mean(layer.value(hidden).numpy(), axis=1, keepdims=True).repeat(3, axis=1),
                               rtol=0, atol=1e-3)
