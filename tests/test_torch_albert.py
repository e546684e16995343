"""ALBERT in PyTorch: the Google / Hugging Face layout against transformers' AlbertForQuestionAnswering,
the brightmart albert_zh layout against an independent float64 numpy implementation of its TF code,
strict loading from TF1 checkpoints, saving, the task heads, and choosing BERT or ALBERT from a config."""
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cnbert.checkpoints import (
    CheckpointError,
    albert_parameter_shapes,
    albert_tf_to_model,
    convert_tf_variables,
    detect_tf_layout,
    find_config,
    model_to_albert_tf,
    read_pretrained_config,
)
from cnbert.config import (
    FACTORIZED_ALBERT_MODEL_TYPE,
    AlbertConfig,
    BertConfig,
    ConfigError,
    config_from_dict,
    read_config,
)
from cnbert.tokenization import bundled_vocab_path
from cnbert.torch import (
    IGNORE_INDEX,
    AlbertForCJRC,
    AlbertForSequenceClassification,
    AlbertForSpanExtraction,
    AlbertModel,
    BertForCJRC,
    BertForSequenceClassification,
    BertForSpanExtraction,
    BertModel,
    cjrc_loss,
    load_for_task,
    load_pretrained,
    model_class_for_task,
    model_for_task,
    save_pretrained,
)
from kernel_testing import needs_extension
from model_helpers import (VOCAB_SIZE, assert_fused_matches_eager, assert_padding_does_not_leak, count_kernel_calls, assert_same_logits, fixed_batch_losses, hf_logits, our_logits, padded_batch,
                           random_transformers_model, randomise, save_hf, write_tf_checkpoint)

import transformers
pytestmark = pytest.mark.usefixtures("one_torch_thread")

V = VOCAB_SIZE
SIZES = dict(vocab_size=V, embedding_size=16, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
             intermediate_size=128, max_position_embeddings=48)
FACTORIZED = AlbertConfig(**SIZES, embedding_layout="factorized_word", hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
PARITY_TOLERANCE = 1e-5  # fp32 against transformers, absolute, on logits of magnitude ~1
FLOAT64_TOLERANCE = 2e-5  # fp32 against the float64 reference, absolute, on values of magnitude ~1-3


def hf_albert(attention="eager", model_class="AlbertForQuestionAnswering", **overrides):
    return random_transformers_model(model_class, attention, **{**SIZES, **overrides})


def assert_same(got, expected, atol=PARITY_TOLERANCE):
    assert_same_logits(got, expected, atol)


# ---- Google / Hugging Face layout against transformers --------------------------------------------

@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("overrides", [dict(hidden_act="gelu_new"), dict(hidden_act="gelu"),
                                       dict(hidden_act="relu", num_hidden_layers=4, num_hidden_groups=2,
                                            inner_group_num=2)],
                         ids=["gelu_new", "gelu", "4layers-2groups-2inner-relu"])
def test_logits_match_transformers(tmp_path, attention, overrides):
    reference = hf_albert(attention, **overrides)
    model, report = load_for_task("cmrc2018", save_hf(reference, tmp_path), attention=attention)
    assert type(model) is AlbertForSpanExtraction and model.config.embedding_layout == "albert"
    assert model.config.hidden_act == overrides["hidden_act"]
    assert report.initialised == [] and report.ignored == []
    expected = hf_logits(reference)
    assert expected[0].abs().max() > 0.5  # logits big enough for the tolerance to mean something
    assert_same(our_logits(model), expected)


def test_state_dict_names_and_shapes_are_transformers_albert_model():
    config = AlbertConfig(**{**SIZES, "num_hidden_layers": 4}, num_hidden_groups=2, inner_group_num=2)
    hf_config = transformers.AlbertConfig(**{**SIZES, "num_hidden_layers": 4}, num_hidden_groups=2, inner_group_num=2)
    ours = {name: tuple(t.shape) for name, t in AlbertModel(config).state_dict().items()}
    assert ours == {name: tuple(t.shape) for name, t in transformers.AlbertModel(hf_config).state_dict().items()}
    assert ours == albert_parameter_shapes(config)
    assert set(AlbertModel(config, add_pooling_layer=False).state_dict()) == set(
        albert_parameter_shapes(config, add_pooling_layer=False))
    assert set(AlbertForSpanExtraction(config).state_dict()) == set(
        transformers.AlbertForQuestionAnswering(hf_config).state_dict())

    factorized = {name: tuple(t.shape) for name, t in AlbertModel(FACTORIZED).state_dict().items()}
    assert factorized == albert_parameter_shapes(FACTORIZED)
    assert factorized["embeddings.word_embeddings.weight"] == (V, 16)
    assert factorized["embeddings.word_embeddings_2.weight"] == (64, 16)
    assert factorized["embeddings.position_embeddings.weight"] == (48, 64)
    assert factorized["encoder.layer_shared.intermediate.dense.weight"] == (128, 64)
    assert "embeddings.word_embeddings_2.bias" not in factorized and not any(".layer.0." in n for n in factorized)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_saved_directory_loads_in_transformers_with_the_same_logits(tmp_path, attention):
    model, _ = load_for_task("drcd", save_hf(hf_albert(attention), tmp_path / "hf"), attention=attention)
    torch.manual_seed(5)
    with torch.no_grad():  # make the saved weights differ from the reference's
        model.qa_outputs.weight.normal_(0.0, 0.3)
    expected = our_logits(model)
    out = save_pretrained(model, tmp_path / "saved", bundled_vocab_path())
    saved_config = json.loads((out / "config.json").read_text())
    assert saved_config["architectures"] == ["AlbertForQuestionAnswering"] and saved_config["model_type"] == "albert"

    loaded, info = transformers.AlbertForQuestionAnswering.from_pretrained(
        out, attn_implementation=attention, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_same(hf_logits(loaded), expected)
    again, report = load_for_task("drcd", out)
    assert report.initialised == [] and again.config == model.config
    assert_same(our_logits(again), expected)


def test_pretraining_heads_are_ignored_and_reported(tmp_path):
    pretrained = hf_albert(model_class="AlbertForPreTraining")
    save_hf(pretrained, tmp_path)
    model, report = load_for_task("cjrc", tmp_path)
    assert type(model) is AlbertForCJRC
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias", "answer_class.weight", "answer_class.bias"]
    assert {name.split(".")[0] for name in report.ignored} == {"predictions", "sop_classifier", "albert"}
    assert {name for name in report.ignored if name.startswith("albert.")} == {"albert.pooler.weight",
                                                                               "albert.pooler.bias"}
    layer = "encoder.albert_layer_groups.0.albert_layers.0.ffn_output.weight"
    torch.testing.assert_close(model.albert.state_dict()[layer], pretrained.albert.state_dict()[layer], atol=0, rtol=0)

    encoder = AlbertModel(model.config)  # with the pooler, which HF AlbertModel has
    assert load_pretrained(encoder, tmp_path).ignored == [name for name in report.ignored
                                                          if not name.startswith("albert.")]
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        expected = pretrained.albert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        got = encoder.eval()(input_ids, attention_mask, token_type_ids)
    assert expected.pooler_output.abs().max() > 0.5
    torch.testing.assert_close(got.pooled_output, expected.pooler_output, atol=PARITY_TOLERANCE, rtol=0)
    torch.testing.assert_close(got.sequence_output, expected.last_hidden_state, atol=PARITY_TOLERANCE, rtol=0)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.bias"),
     r"missing weights \[albert\.encoder\.albert_layer_groups\.0\.albert_layers\.0\.full_layer_layer_norm\.bias\]"),
    (lambda s: s.update({"albert.encoder.embedding_hidden_mapping_in.weight": torch.zeros(64, 8)}),
     r"albert\.encoder\.embedding_hidden_mapping_in\.weight: the checkpoint has shape \(64, 8\) "
     r"but the model expects \(64, 16\)"),
    (lambda s: s.update({"albert.encoder.extra.weight": torch.zeros(1)}),
     r"unexpected keys \[albert\.encoder\.extra\.weight\] \(only the pretraining heads "
     r"predictions\.\*/sop_classifier\.\* may be left unused\)"),
    (lambda s: s.pop("qa_outputs.weight"), r"missing weights \[qa_outputs\.weight\]"),
], ids=["missing", "shape", "unexpected", "half-a-head"])
def test_strict_loading_errors(tmp_path, change, message):
    directory = save_hf(hf_albert(), tmp_path)
    state = load_file(directory / "model.safetensors")
    change(state)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=message) as info:
        load_for_task("cmrc2018", directory)
    assert str(directory / "model.safetensors") in str(info.value)


def test_a_bert_checkpoint_does_not_load_into_albert(tmp_path):
    bert = transformers.BertForQuestionAnswering(transformers.BertConfig(
        **{k: v for k, v in SIZES.items() if k != "embedding_size"}))
    bert.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"missing weights \[albert\.embeddings\.word_embeddings\.weight"):
        load_pretrained(AlbertForSpanExtraction(AlbertConfig(**SIZES)), tmp_path / "model.safetensors")


# ---- Google ALBERT TF names ------------------------------------------------------------------------

def numpy_state(module):
    return {name: t.detach().numpy().copy() for name, t in module.state_dict().items()}


def test_google_albert_names_round_trip_exactly():
    encoder = randomise(transformers.AlbertModel(transformers.AlbertConfig(
        **{**SIZES, "num_hidden_layers": 4}, num_hidden_groups=2, inner_group_num=2)))
    weights = numpy_state(encoder)
    variables = model_to_albert_tf(weights, "albert")
    layer = "bert/encoder/transformer/group_1/inner_group_1/"
    expected_shapes = {  # REFERENCE.md section 4; kernels are [in, out]
        "bert/embeddings/word_embeddings": (V, 16), "bert/embeddings/position_embeddings": (48, 16),
        "bert/embeddings/token_type_embeddings": (2, 16), "bert/embeddings/LayerNorm/gamma": (16,),
        "bert/encoder/embedding_hidden_mapping_in/kernel": (16, 64),
        "bert/encoder/embedding_hidden_mapping_in/bias": (64,),
        layer + "attention_1/self/query/kernel": (64, 64), layer + "attention_1/self/value/bias": (64,),
        layer + "attention_1/output/dense/kernel": (64, 64), layer + "LayerNorm/gamma": (64,),
        layer + "ffn_1/intermediate/dense/kernel": (64, 128),
        layer + "ffn_1/intermediate/output/dense/kernel": (128, 64), layer + "LayerNorm_1/beta": (64,),
        "bert/pooler/dense/kernel": (64, 64),
    }
    for name, shape in expected_shapes.items():
        assert variables[name].shape == shape, name
    assert len(variables) == len(weights)
    assert detect_tf_layout(variables) == "albert"
    conversion, layout = convert_tf_variables({**variables, "global_step": np.int64(3),
                                               "cls/predictions/output_bias": np.zeros(V, np.float32)})
    assert layout == "albert" and conversion.skipped == ["cls/predictions/output_bias", "global_step"]
    assert conversion.weights.keys() == weights.keys()
    for name, array in weights.items():
        np.testing.assert_array_equal(conversion.weights[name], array, err_msg=name)
    x = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)  # kernels compute what Linear does
    ffn = encoder.encoder.albert_layer_groups[1].albert_layers[1].ffn
    np.testing.assert_allclose(x @ variables[layer + "ffn_1/intermediate/dense/kernel"]
                               + variables[layer + "ffn_1/intermediate/dense/bias"],
                               ffn(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    with pytest.raises(CheckpointError, match=r"not Google ALBERT weights: \['bert/encoder/transformer/extra'\]"):
        albert_tf_to_model({**variables, "bert/encoder/transformer/extra": np.zeros(2)}, "albert")


# Google ALBERT's TF variable names written out by hand from google-research/albert modeling.py (not
# generated from cnbert's table, so that a swap inside that table cannot hide): `attention_ffn_block`
# opens attention_1/{self,output} and then the first layer_norm (scope "LayerNorm", the attention
# output norm), then ffn_1/intermediate/{dense,output/dense} and the second layer_norm ("LayerNorm_1",
# the FFN output norm). transformers' load_tf_weights_in_albert maps them the same way
# (LayerNorm_1 -> full_layer_layer_norm, LayerNorm -> attention.LayerNorm).
GOOGLE_ALBERT_TF_TO_HF = {
    "bert/embeddings/word_embeddings": "embeddings.word_embeddings.weight",
    "bert/embeddings/position_embeddings": "embeddings.position_embeddings.weight",
    "bert/embeddings/token_type_embeddings": "embeddings.token_type_embeddings.weight",
    "bert/embeddings/LayerNorm/gamma": "embeddings.LayerNorm.weight",
    "bert/embeddings/LayerNorm/beta": "embeddings.LayerNorm.bias",
    "bert/encoder/embedding_hidden_mapping_in/kernel": "encoder.embedding_hidden_mapping_in.weight",
    "bert/encoder/embedding_hidden_mapping_in/bias": "encoder.embedding_hidden_mapping_in.bias",
    "bert/encoder/transformer/group_1/inner_group_0/attention_1/self/query/kernel":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.query.weight",
    "bert/encoder/transformer/group_1/inner_group_0/attention_1/self/query/bias":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.query.bias",
    "bert/encoder/transformer/group_1/inner_group_0/attention_1/self/key/kernel":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.key.weight",
    "bert/encoder/transformer/group_1/inner_group_0/attention_1/self/key/bias":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.key.bias",
    "bert/encoder/transformer/group_1/inner_group_0/attention_1/self/value/kernel":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.value.weight",
    "bert/encoder/transformer/group_1/inner_group_0/attention_1/self/value/bias":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.value.bias",
    "bert/encoder/transformer/group_1/inner_group_0/attention_1/output/dense/kernel":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.dense.weight",
    "bert/encoder/transformer/group_1/inner_group_0/attention_1/output/dense/bias":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.dense.bias",
    "bert/encoder/transformer/group_1/inner_group_0/LayerNorm/gamma":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.LayerNorm.weight",
    "bert/encoder/transformer/group_1/inner_group_0/LayerNorm/beta":
        "encoder.albert_layer_groups.1.albert_layers.0.attention.LayerNorm.bias",
    "bert/encoder/transformer/group_1/inner_group_0/ffn_1/intermediate/dense/kernel":
        "encoder.albert_layer_groups.1.albert_layers.0.ffn.weight",
    "bert/encoder/transformer/group_1/inner_group_0/ffn_1/intermediate/dense/bias":
        "encoder.albert_layer_groups.1.albert_layers.0.ffn.bias",
    "bert/encoder/transformer/group_1/inner_group_0/ffn_1/intermediate/output/dense/kernel":
        "encoder.albert_layer_groups.1.albert_layers.0.ffn_output.weight",
    "bert/encoder/transformer/group_1/inner_group_0/ffn_1/intermediate/output/dense/bias":
        "encoder.albert_layer_groups.1.albert_layers.0.ffn_output.bias",
    "bert/encoder/transformer/group_1/inner_group_0/LayerNorm_1/gamma":
        "encoder.albert_layer_groups.1.albert_layers.0.full_layer_layer_norm.weight",
    "bert/encoder/transformer/group_1/inner_group_0/LayerNorm_1/beta":
        "encoder.albert_layer_groups.1.albert_layers.0.full_layer_layer_norm.bias",
    "bert/pooler/dense/kernel": "pooler.weight",
    "bert/pooler/dense/bias": "pooler.bias",
}


def test_google_albert_names_map_as_in_googles_modeling_py():
    # The round trip above is generated from cnbert's own table, so swapping two same-shaped entries
    # (LayerNorm <-> LayerNorm_1, query <-> key) passes it; this checks every name against the
    # hand-written list, both ways, and that kernels (only they) are transposed.
    config = AlbertConfig(**{**SIZES, "num_hidden_layers": 4}, num_hidden_groups=2, inner_group_num=2)
    shapes = albert_parameter_shapes(config)
    assert set(GOOGLE_ALBERT_TF_TO_HF.values()) <= shapes.keys()
    rng = np.random.default_rng(0)
    for tf_name, hf_name in GOOGLE_ALBERT_TF_TO_HF.items():
        value = rng.normal(size=shapes[hf_name]).astype(np.float32)
        tf_value = value.T if tf_name.endswith("/kernel") else value
        variables = model_to_albert_tf({hf_name: value}, "albert")
        assert list(variables) == [tf_name], hf_name
        np.testing.assert_array_equal(variables[tf_name], tf_value, err_msg=tf_name)
        weights = albert_tf_to_model({tf_name: tf_value}, "albert").weights
        assert list(weights) == [hf_name], tf_name
        np.testing.assert_array_equal(weights[hf_name], value, err_msg=hf_name)


# ---- brightmart albert_zh ---------------------------------------------------------------------------

def brightmart_variables(seed=0, hidden=64, embedding=16, intermediate=128, positions=48):
    """Random weights under brightmart albert_zh's TF names (float32), sized to give activations of order 1."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale):
        return rng.normal(0.0, scale, size=shape).astype(np.float32)

    variables = {
        "bert/embeddings/word_embeddings": normal(V, embedding, scale=1.0),
        "bert/embeddings/word_embeddings_2": normal(embedding, hidden, scale=embedding ** -0.5),
        "bert/embeddings/token_type_embeddings": normal(2, hidden, scale=0.5),
        "bert/embeddings/position_embeddings": normal(positions, hidden, scale=0.5),
        "bert/embeddings/LayerNorm/gamma": 1 + normal(hidden, scale=0.2),
        "bert/embeddings/LayerNorm/beta": normal(hidden, scale=0.2),
    }
    layer = "bert/encoder/layer_shared/"
    dense_layers = [(layer + "attention/self/query", hidden, hidden), (layer + "attention/self/key", hidden, hidden),
                    (layer + "attention/self/value", hidden, hidden),
                    (layer + "attention/output/dense", hidden, hidden),
                    (layer + "intermediate/dense", hidden, intermediate),
                    (layer + "output/dense", intermediate, hidden), ("bert/pooler/dense", hidden, hidden)]
    for scope, fan_in, fan_out in dense_layers:
        variables[scope + "/kernel"] = normal(fan_in, fan_out, scale=2.0 * fan_in ** -0.5)
        variables[scope + "/bias"] = normal(fan_out, scale=0.2)
    for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
        variables[f"{layer}{norm}/gamma"] = 1 + normal(hidden, scale=0.2)
        variables[f"{layer}{norm}/beta"] = normal(hidden, scale=0.2)
    return variables


def brightmart_reference(variables, input_ids, input_mask, token_type_ids, num_heads, num_layers):
    """brightmart albert_zh's BertModel (modeling.py) in float64 numpy, written from its TF code:
    factorized word lookup (x @ word_embeddings_2, no bias), + token-type and position embeddings,
    LayerNorm (eps 1e-12); one shared post-LayerNorm layer repeated num_layers times, with the
    additive -10000 * (1 - mask) attention mask; tanh pooler on [CLS]. GELU is the erf form cnbert
    reads "gelu" as. Returns (sequence output, pooled output)."""
    v = {name: np.asarray(array, np.float64) for name, array in variables.items()}
    batch, seq = input_ids.shape

    def layer_norm(x, scope):
        mean = x.mean(-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(variance + 1e-12) * v[scope + "/gamma"] + v[scope + "/beta"]

    def dense(x, scope):
        return x @ v[scope + "/kernel"] + v[scope + "/bias"]

    def gelu(x):
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))

    def heads(x):
        return x.reshape(batch, seq, num_heads, -1).transpose(0, 2, 1, 3)

    x = v["bert/embeddings/word_embeddings"][input_ids] @ v["bert/embeddings/word_embeddings_2"]
    x = x + v["bert/embeddings/token_type_embeddings"][token_type_ids]
    x = x + v["bert/embeddings/position_embeddings"][:seq]
    x = layer_norm(x, "bert/embeddings/LayerNorm")
    adder = (1.0 - input_mask[:, None, None, :].astype(np.float64)) * -10000.0
    layer = "bert/encoder/layer_shared/"
    for _ in range(num_layers):
        q, k, value = (heads(dense(x, f"{layer}attention/self/{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + adder
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ value).transpose(0, 2, 1, 3).reshape(batch, seq, -1)
        attended = layer_norm(dense(context, layer + "attention/output/dense") + x,
                              layer + "attention/output/LayerNorm")
        x = layer_norm(dense(gelu(dense(attended, layer + "intermediate/dense")), layer + "output/dense") + attended,
                       layer + "output/LayerNorm")
    return x, np.tanh(dense(x[:, 0], "bert/pooler/dense"))


def reference_outputs(variables, config=FACTORIZED):
    input_ids, attention_mask, token_type_ids = padded_batch()
    return brightmart_reference(variables, input_ids.numpy(), attention_mask.numpy(), token_type_ids.numpy(),
                                config.num_attention_heads, config.num_hidden_layers)


def assert_matches_reference(model, variables):
    sequence, pooled = reference_outputs(variables, model.config)
    with torch.no_grad():
        out = model.eval()(*padded_batch())
    real = padded_batch()[1].bool().numpy()  # padded positions are garbage in both; compare real tokens
    assert np.abs(sequence[real]).max() > 1.0
    np.testing.assert_allclose(out.sequence_output.double().numpy()[real], sequence[real], atol=FLOAT64_TOLERANCE,
                               rtol=0)
    np.testing.assert_allclose(out.pooled_output.double().numpy(), pooled, atol=FLOAT64_TOLERANCE, rtol=0)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_factorized_model_matches_the_float64_reference(attention):
    variables = brightmart_variables()
    conversion = albert_tf_to_model(variables, "factorized_word")
    assert conversion.weights["embeddings.word_embeddings_2.weight"].shape == (64, 16)  # torch [out, in]
    model = AlbertModel(FACTORIZED.replace(attention=attention))
    model.load_state_dict({name: torch.from_numpy(a) for name, a in conversion.weights.items()}, strict=True)
    assert_matches_reference(model, variables)
    assert model_to_albert_tf(conversion.weights, "factorized_word").keys() == variables.keys()


# brightmart's albert_config_large.json keys (brightmart/albert_zh albert_config/), tiny sizes.
BRIGHTMART_CONFIG = {
    "attention_probs_dropout_prob": 0.0, "directionality": "bidi", "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
    "hidden_size": 64, "embedding_size": 16, "initializer_range": 0.02, "intermediate_size": 128,
    "max_position_embeddings": 48, "num_attention_heads": 4, "num_hidden_layers": 3, "pooler_fc_size": 768,
    "pooler_num_attention_heads": 12, "pooler_num_fc_layers": 3, "pooler_size_per_head": 128,
    "pooler_type": "first_token_transform", "type_vocab_size": 2, "vocab_size": V, "ln_type": "postln",
}


def write_brightmart_checkpoint(directory, variables):
    """A TF1 checkpoint named as brightmart's albert_large_zh release names it."""
    return write_tf_checkpoint(directory, variables, BRIGHTMART_CONFIG, "albert_model.ckpt", "albert_config_large.json")


@pytest.mark.slow
def test_brightmart_tf_checkpoint_loads_strictly_matches_the_reference_and_round_trips(tmp_path):
    variables = brightmart_variables()
    pretraining = {"cls/predictions/output_bias": np.zeros(V, np.float32),
                   "cls/predictions/transform/dense/kernel": np.ones((64, 64), np.float32),
                   "cls/seq_relationship/output_weights": np.ones((2, 64), np.float32)}
    directory = write_brightmart_checkpoint(tmp_path / "albert_large_zh", {**variables, **pretraining})

    config = read_pretrained_config(directory)
    assert find_config(directory).name == "albert_config_large.json"
    assert type(config) is AlbertConfig and config == FACTORIZED.replace(attention="sdpa", classifier_dropout=0.1)
    encoder = AlbertModel(config)
    report = load_pretrained(encoder, directory)
    assert report.initialised == [] and report.ignored == []  # cls/* and global_step are skipped in conversion
    assert len(report.loaded) == len(variables)
    assert_matches_reference(encoder, variables)

    model, report = load_for_task("cjrc", directory, attention="eager")
    assert type(model) is AlbertForCJRC
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias", "answer_class.weight", "answer_class.bias"]
    assert report.ignored == ["albert.pooler.dense.bias", "albert.pooler.dense.weight"]
    torch.manual_seed(3)
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0.0, 0.3)
        model.qa_outputs.bias.normal_(0.0, 0.3)
    sequence, _ = reference_outputs(variables)
    qa_weight, qa_bias = (t.detach().double().numpy() for t in (model.qa_outputs.weight, model.qa_outputs.bias))
    expected_start = sequence @ qa_weight[0] + qa_bias[0]
    start = our_logits(model)[0].double().numpy()
    real = padded_batch()[1].bool().numpy()
    np.testing.assert_allclose(start[real], expected_start[real], atol=FLOAT64_TOLERANCE, rtol=0)

    out = save_pretrained(model, tmp_path / "saved", bundled_vocab_path())
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == FACTORIZED_ALBERT_MODEL_TYPE and saved["embedding_layout"] == "factorized_word"
    assert saved["architectures"] == ["CnbertFactorizedAlbertForCJRC"]
    assert not hasattr(transformers, saved["architectures"][0])
    with pytest.raises(ValueError, match="does not recognize this architecture"):
        transformers.AutoConfig.from_pretrained(out)  # never silently loaded into HF AlbertModel
    again, report = load_for_task("cjrc", out, attention="eager")
    assert report.initialised == [] and again.config == model.config
    with torch.no_grad():
        got, expected = again.eval()(*padded_batch()), model.eval()(*padded_batch())
    for name in ("start_logits", "end_logits", "class_logits"):
        torch.testing.assert_close(got[name], expected[name], atol=0, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    (lambda v: v.pop("bert/embeddings/word_embeddings_2"),
     r"missing weights \[albert\.embeddings\.word_embeddings_2\.weight\]"),
    (lambda v: v.update({"bert/encoder/layer_shared/intermediate/dense/kernel": np.zeros((64, 100), np.float32)}),
     r"albert\.encoder\.layer_shared\.intermediate\.dense\.weight: the checkpoint has shape \(100, 64\) "
     r"but the model expects \(128, 64\)"),
    (lambda v: v.update({"bert/encoder/layer_shared/attention/self/query/gain": np.zeros(64, np.float32)}),
     r"not brightmart albert_zh weights: \['bert/encoder/layer_shared/attention/self/query/gain'\]"),
], ids=["no-word_embeddings_2", "misshaped-shared-layer", "unknown-variable"])
def test_broken_brightmart_checkpoints_are_refused_naming_the_tensor(tmp_path, change, message):
    variables = brightmart_variables()
    change(variables)
    directory = write_brightmart_checkpoint(tmp_path, variables)
    with pytest.raises(CheckpointError, match=message) as info:
        load_for_task("cmrc2018", directory)
    assert "albert_model.ckpt" in str(info.value)


@pytest.mark.slow
def test_google_albert_tf_checkpoint_loads_like_the_reference(tmp_path):
    reference = hf_albert()
    variables = model_to_albert_tf({name.removeprefix("albert."): t.numpy() for name, t in
                                    reference.state_dict().items() if name.startswith("albert.")}, "albert")
    variables["bert/pooler/dense/kernel"] = np.ones((64, 64), np.float32)
    variables["bert/pooler/dense/bias"] = np.ones(64, np.float32)
    variables["cls/predictions/output_bias"] = np.zeros(V, np.float32)
    google_config = {"attention_probs_dropout_prob": 0, "hidden_act": "gelu_new", "hidden_dropout_prob": 0,
                     "embedding_size": 16, "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
                     "max_position_embeddings": 48, "num_attention_heads": 4, "num_hidden_layers": 3,
                     "num_hidden_groups": 1, "net_structure_type": 0, "gap_size": 0, "num_memory_blocks": 0,
                     "inner_group_num": 1, "down_scale_factor": 1, "type_vocab_size": 2, "vocab_size": V}
    directory = write_tf_checkpoint(tmp_path, variables, google_config, prefix="model.ckpt-best",
                                    config_name="albert_config.json")
    assert read_pretrained_config(directory).embedding_layout == "albert"
    model, report = load_for_task("cmrc2018", directory)
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias"]
    assert report.ignored == ["albert.pooler.bias", "albert.pooler.weight"]
    model.qa_outputs.load_state_dict(reference.qa_outputs.state_dict())
    assert_same(our_logits(model), hf_logits(reference))


# ---- task heads on ALBERT -----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["albert", "factorized_word"])
def test_cjrc_head_on_albert_and_its_loss(layout):
    config = AlbertConfig(**SIZES, embedding_layout=layout, initializer_range=0.2, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    cjrc = AlbertForCJRC(config).eval()
    span = AlbertForSpanExtraction(config).eval()
    span.load_state_dict({k: v for k, v in cjrc.state_dict().items() if not k.startswith("answer_class.")})
    input_ids, attention_mask, token_type_ids = padded_batch()
    logits = cjrc(input_ids, attention_mask, token_type_ids)
    with torch.no_grad():
        span_logits = span(input_ids, attention_mask, token_type_ids)
        cls_state = cjrc.albert(input_ids, attention_mask, token_type_ids).sequence_output[:, 0]
    assert set(logits) == {"start_logits", "end_logits", "class_logits"} and set(span_logits) == {"start_logits",
                                                                                                  "end_logits"}
    for name in ("start_logits", "end_logits"):
        torch.testing.assert_close(logits[name], span_logits[name], atol=0, rtol=0)
    torch.testing.assert_close(logits["class_logits"], cjrc.answer_class(cls_state), atol=1e-6, rtol=0)

    starts, ends = torch.tensor([9, IGNORE_INDEX, 0]), torch.tensor([11, IGNORE_INDEX, 0])
    loss = cjrc_loss(logits, starts, ends, torch.tensor([0, 1, IGNORE_INDEX]))
    loss.backward()
    shared = (cjrc.albert.encoder.layer_shared.output.dense.weight if layout == "factorized_word"
              else cjrc.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn_output.weight)
    assert shared.grad.abs().sum() > 0 and cjrc.answer_class.weight.grad.abs().sum() > 0
    assert cjrc.albert.embeddings.word_embeddings.weight.grad[0].abs().sum() == 0  # padding row


@pytest.mark.parametrize("layout", ["albert", "factorized_word"])
def test_the_residual_stream_stays_float32_under_bf16_autocast(layout):
    """As in BERT (whose embeddings end in LayerNorm, float32 under autocast) and in the TF model:
    the Google layout's E -> H projection comes out in bf16 under autocast and is cast back."""
    model = AlbertModel(AlbertConfig(**SIZES, embedding_layout=layout)).eval()
    first_layer = model.encoder.albert_layer_groups[0] if layout == "albert" else model.encoder.layer_shared
    seen = []
    first_layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids, attention_mask, token_type_ids)
    assert seen and set(seen) == {torch.float32}


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_padding_does_not_leak_into_real_tokens(attention):
    torch.manual_seed(0)
    model = AlbertForSpanExtraction(FACTORIZED.replace(attention=attention, initializer_range=0.2)).eval()
    assert_padding_does_not_leak(model)


def test_a_fresh_factorized_model_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = AlbertForSpanExtraction(FACTORIZED.replace(vocab_size=200)).train()
    losses = fixed_batch_losses(model)
    assert losses[0] > math.log(20) - 0.5 and losses[-1] < 0.3 * losses[0], losses


# ---- choosing the model from the config ----------------------------------------------------------------

def test_model_for_task_picks_bert_or_albert():
    bert = BertConfig(**{k: v for k, v in SIZES.items() if k != "embedding_size"})
    albert = AlbertConfig(**SIZES)
    assert model_class_for_task("cmrc2018", bert) is BertForSpanExtraction
    assert model_class_for_task("drcd", bert) is BertForSpanExtraction
    assert model_class_for_task("cjrc", bert) is BertForCJRC
    assert model_class_for_task("span", albert) is AlbertForSpanExtraction
    assert model_class_for_task("cjrc", FACTORIZED) is AlbertForCJRC
    assert type(model_for_task("drcd", albert)) is AlbertForSpanExtraction
    assert model_class_for_task("xnli", bert) is BertForSequenceClassification
    xnli = model_for_task("xnli", albert)
    assert type(xnli) is AlbertForSequenceClassification and xnli.classifier.out_features == 3
    with pytest.raises(ValueError, match="unknown task 'squad'"):
        model_for_task("squad", albert)
    with pytest.raises(ConfigError, match="an ALBERT config .* cannot build the BERT model"):
        BertModel(albert)
    with pytest.raises(ConfigError, match="AlbertModel needs an AlbertConfig"):
        AlbertModel(bert)


def test_albert_config_reads_and_writes_transformers_configs(tmp_path):
    hf = transformers.AlbertConfig(**SIZES, num_hidden_groups=3, inner_group_num=2, hidden_act="gelu",
                                   layer_norm_eps=1e-6, hidden_dropout_prob=0.2, pad_token_id=1,
                                   classifier_dropout_prob=0.3)
    hf.save_pretrained(tmp_path / "hf")
    config = read_config(tmp_path / "hf" / "config.json")
    assert type(config) is AlbertConfig and config.embedding_layout == "albert"
    for field in ("embedding_size", "hidden_size", "num_hidden_groups", "inner_group_num", "hidden_act",
                  "layer_norm_eps", "hidden_dropout_prob", "pad_token_id", "max_position_embeddings"):
        assert getattr(config, field) == getattr(hf, field), field
    assert config.classifier_dropout == hf.classifier_dropout_prob == 0.3

    written = config.replace(attention="eager")
    written.to_json_file(tmp_path / "config.json", architectures=["AlbertForQuestionAnswering"])
    again = transformers.AlbertConfig.from_pretrained(tmp_path)
    for field in ("embedding_size", "num_hidden_groups", "inner_group_num", "layer_norm_eps", "hidden_act"):
        assert getattr(again, field) == getattr(written, field), field
    assert again.classifier_dropout_prob == written.classifier_dropout
    assert read_config(tmp_path / "config.json") == written
    assert config_from_dict(FACTORIZED.to_dict()) == FACTORIZED
    assert FACTORIZED.to_dict()["model_type"] == FACTORIZED_ALBERT_MODEL_TYPE


@pytest.mark.parametrize("values, message", [
    ({**SIZES}, "an ALBERT config without model_type or embedding_layout"),
    ({**SIZES, "model_type": "albert", "embedding_layout": "factorized_word"},
     "model_type 'albert' contradicts embedding_layout 'factorized_word'"),
    ({**SIZES, "embedding_layout": "factorized_word", "ln_type": "preln"}, "ln_type='preln' is not supported"),
    ({**SIZES, "model_type": "albert", "net_structure_type": 1}, "net_structure_type=1 is not supported"),
    ({**SIZES, "model_type": "albert", "num_hidden_groups": 4}, "num_hidden_groups 4 exceeds num_hidden_layers 3"),
    ({**SIZES, "model_type": "albert", "embedding_size": 0}, "embedding_size must be a positive integer"),
    ({**SIZES, "embedding_layout": "factorized_word", "inner_group_num": 2},
     "the factorized_word layout .* shares one layer"),
    ({**SIZES, "embedding_layout": "siamese"}, "embedding_layout 'siamese' is not one of albert, factorized_word"),
    ({**SIZES, "model_type": "roberta"}, "model_type is 'roberta'; this is the BERT model"),
])
def test_invalid_albert_configs_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values, source="albert_config.json")


def test_config_files_in_a_directory(tmp_path):
    (tmp_path / "albert_config_large.json").write_text(json.dumps(BRIGHTMART_CONFIG))
    assert find_config(tmp_path).name == "albert_config_large.json"
    with pytest.raises(CheckpointError, match="no weights found"):  # its layout comes from the checkpoint
        read_pretrained_config(tmp_path)
    save_file({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="add \"embedding_layout\""):
        read_pretrained_config(tmp_path)
    (tmp_path / "albert_config_base.json").write_text("{}")
    with pytest.raises(CheckpointError, match="several model configs"):
        find_config(tmp_path)


@needs_extension
@pytest.mark.parametrize("layout", ["albert", "factorized_word"])
@pytest.mark.parametrize("hidden_act", ["gelu_new", "gelu", "relu"])
def test_fused_attention_fuses_the_ffn_bias_gelu_and_matches_eager(monkeypatch, layout, hidden_act):
    """attention="fused" on ALBERT runs the fused softmax and, for GELU-family activations, the
    FFN's fused bias + GELU (once per layer application), as on BERT; logits and every parameter
    gradient equal the eager model's (assert_fused_matches_eager)."""
    calls = count_kernel_calls(monkeypatch)
    config = AlbertConfig(**SIZES, embedding_layout=layout, hidden_act=hidden_act, initializer_range=0.2,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    eager = AlbertForSpanExtraction(config)
    fused = AlbertForSpanExtraction(config.replace(attention="fused"))
    fused.load_state_dict(eager.state_dict())
    assert_fused_matches_eager(eager, fused)
    layers = SIZES["num_hidden_layers"]
    assert calls == {"scaled_masked_softmax": layers, "bias_gelu": 0 if hidden_act == "relu" else layers}


@pytest.mark.parametrize("task", ["cmrc2018", "cjrc", "lcqmc", "msra_ner"])
@pytest.mark.parametrize("layout", ["bert", "albert", "factorized_word"])
def test_every_dropout_module_acts_in_a_training_forward_pass(task, layout):
    # a dropout module built but never called (an FFN or attention output left undropped) trains a
    # model unlike Google's, and no inference parity test sees it
    sizes = dict(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=32, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    config = (BertConfig(**sizes) if layout == "bert"
              else AlbertConfig(**sizes, embedding_size=16, embedding_layout=layout))
    model = model_for_task(task, config).train()
    calls = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout):
            calls[name] = 0
            module.register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls[name] + 1))
    input_ids, attention_mask, token_type_ids = padded_batch(vocab_size=200)
    model(input_ids, attention_mask, token_type_ids)
    assert calls and all(count > 0 for count in calls.values()), calls
