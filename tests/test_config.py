"""BertConfig: reading Google and Hugging Face configs, validation, and transformers-readable output."""
import dataclasses
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from cnbert.config import ATTENTION_IMPLEMENTATIONS, BertConfig, ConfigError

GOOGLE_CONFIG = Path(str(resources.files("cnbert") / "resources" / "bert_config.json"))
TINY = dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def test_google_bert_config_gets_layer_norm_eps_1e_12():
    config = BertConfig.from_json_file(GOOGLE_CONFIG)
    assert "layer_norm_eps" not in json.loads(GOOGLE_CONFIG.read_text())
    assert config.layer_norm_eps == 1e-12
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.max_position_embeddings, config.type_vocab_size) == (
        21128, 768, 12, 12, 3072, 512, 2)
    assert config.hidden_act == "gelu" and config.head_size == 64


def test_reads_a_transformers_config_json(tmp_path):
    import transformers
    hf = transformers.BertConfig(**TINY, hidden_act="gelu_new", layer_norm_eps=1e-5, hidden_dropout_prob=0.2,
                                 attention_probs_dropout_prob=0.05, max_position_embeddings=40,
                                 type_vocab_size=3, initializer_range=0.05, pad_token_id=1, classifier_dropout=0.3)
    hf.save_pretrained(tmp_path)
    config = BertConfig.from_json_file(tmp_path / "config.json")
    for field in dataclasses.fields(BertConfig):
        if field.name != "attention":
            assert getattr(config, field.name) == getattr(hf, field.name), field.name


# the keys an ALBERT config may leave out whose values no weight's shape reveals (and the sizes)
UNSHAPED = ("num_attention_heads", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob")


@pytest.mark.parametrize("left_out", [UNSHAPED, UNSHAPED + ("hidden_size", "intermediate_size", "vocab_size")])
def test_keys_a_transformers_albert_config_leaves_out_take_transformers_defaults(left_out):
    """BERT's 12 heads and erf GELU would load an ALBERT checkpoint strictly and compute something else."""
    import transformers
    from cnbert.config import AlbertConfig
    values = {"model_type": "albert", "embedding_size": 16, "hidden_size": 4096, "num_hidden_layers": 2,
              "intermediate_size": 16384, "vocab_size": 30000}
    values = {key: value for key, value in values.items() if key not in left_out}
    config, hf = AlbertConfig.from_dict(values), transformers.AlbertConfig.from_dict(values)
    for name in UNSHAPED + ("hidden_size", "intermediate_size", "vocab_size", "embedding_size"):
        assert getattr(config, name) == getattr(hf, name), name
    assert (config.num_attention_heads, config.hidden_act) == (64, "gelu_new")


def test_keys_a_google_albert_config_leaves_out_take_google_albert_defaults():
    """google-research/albert modeling.AlbertConfig: albert_xxlarge's 64 heads, no dropout, "gelu"
    (which cnbert computes in the erf form, README); brightmart's albert_zh reads its configs with
    BERT's BertConfig, whose defaults are BERT's."""
    from cnbert.config import AlbertConfig
    sizes = {"embedding_size": 16, "hidden_size": 192, "num_hidden_layers": 2, "intermediate_size": 384,
             "vocab_size": 100}
    google = AlbertConfig.from_dict({**sizes, "embedding_layout": "albert"})
    assert (google.num_attention_heads, google.hidden_act, google.hidden_dropout_prob,
            google.attention_probs_dropout_prob) == (64, "gelu", 0.0, 0.0)
    brightmart = AlbertConfig.from_dict({**sizes, "embedding_layout": "factorized_word"})
    assert (brightmart.num_attention_heads, brightmart.hidden_act, brightmart.hidden_dropout_prob) == (12, "gelu", 0.1)
    # a key the file gives wins
    given = AlbertConfig.from_dict({**sizes, "embedding_layout": "albert", "num_attention_heads": 2})
    assert given.num_attention_heads == 2


def test_classifier_dropout_is_bert_hidden_dropout_and_albert_0_1_unless_set():
    """Google's run_classifier, Google ALBERT's classifier_utils and brightmart albert_zh's
    run_classifier all hard-code 0.1 before the classifier; transformers' BertConfig takes
    hidden_dropout_prob and its AlbertConfig 0.1. ALBERT configs set the hidden dropout to 0, so
    following it would train ALBERT's classifiers without dropout."""
    from cnbert.config import AlbertConfig
    assert BertConfig(**TINY).classifier_dropout_rate == 0.1
    assert BertConfig(**TINY, hidden_dropout_prob=0.2).classifier_dropout_rate == 0.2
    assert BertConfig(**TINY, hidden_dropout_prob=0.2, classifier_dropout=0.0).classifier_dropout_rate == 0.0
    sizes = {"embedding_size": 16, "hidden_size": 192, "num_hidden_layers": 2, "intermediate_size": 384,
             "vocab_size": 100}
    for values in ({**sizes, "embedding_layout": "albert"}, {**sizes, "embedding_layout": "factorized_word",
                                                              "hidden_dropout_prob": 0.0},
                   {**sizes, "model_type": "albert"}):
        albert = AlbertConfig.from_dict(values)
        assert (albert.hidden_dropout_prob, albert.classifier_dropout_rate) == (0.0, 0.1), values
    # transformers' ALBERT key, read and written under its name
    albert = AlbertConfig.from_dict({**sizes, "model_type": "albert", "classifier_dropout_prob": 0.25})
    assert albert.classifier_dropout_rate == 0.25 and albert.to_dict()["classifier_dropout_prob"] == 0.25
    assert "classifier_dropout" not in albert.to_dict() and AlbertConfig.from_dict(albert.to_dict()) == albert
    with pytest.raises(ConfigError, match="has classifier_dropout, BERT's key; ALBERT's is classifier_dropout_prob"):
        AlbertConfig.from_dict({**sizes, "model_type": "albert", "classifier_dropout": 0.25})
    with pytest.raises(ConfigError, match=r"classifier_dropout_prob must be a number in \[0, 1\) for ALBERT, got None"):
        AlbertConfig.from_dict({**sizes, "model_type": "albert", "classifier_dropout_prob": None})


def test_written_config_json_is_read_by_transformers(tmp_path):
    import transformers
    config = BertConfig(**TINY, hidden_act="relu", layer_norm_eps=1e-6, pad_token_id=3, attention="eager",
                        classifier_dropout=0.25)
    config.to_json_file(tmp_path / "config.json", architectures=["BertForQuestionAnswering"])
    hf = transformers.BertConfig.from_pretrained(tmp_path)
    assert hf.model_type == "bert" and hf.architectures == ["BertForQuestionAnswering"]
    for field in dataclasses.fields(BertConfig):
        assert getattr(hf, field.name) == getattr(config, field.name), field.name
    assert BertConfig.from_json_file(tmp_path / "config.json") == config


def test_dict_round_trip_and_replace():
    config = BertConfig(**TINY, attention="eager")
    assert config.to_dict()["model_type"] == "bert"
    assert BertConfig.from_dict(config.to_dict()) == config
    assert config.replace(attention="sdpa").attention == "sdpa"
    with pytest.raises(ConfigError, match="num_attention_heads"):
        config.replace(num_attention_heads=5)


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=64, num_attention_heads=5), "hidden_size 64 is not divisible by num_attention_heads 5"),
    (dict(hidden_act="fast_gelu"), "hidden_act 'fast_gelu' is not supported"),
    (dict(hidden_act="swish"), "choose one of gelu, gelu_new"),
    (dict(hidden_dropout_prob=1.0), r"hidden_dropout_prob must be a number in \[0, 1\)"),
    (dict(attention_probs_dropout_prob=-0.1), "attention_probs_dropout_prob"),
    (dict(classifier_dropout=1.0), r"classifier_dropout must be a number in \[0, 1\), got 1.0"),
    (dict(classifier_dropout="0.1"), r"classifier_dropout must be a number in \[0, 1\), got '0.1'"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps must be a number in"),
    (dict(initializer_range=float("nan")), "initializer_range"),
    (dict(vocab_size=0), "vocab_size must be a positive integer"),
    (dict(num_hidden_layers=True), "num_hidden_layers must be a positive integer"),
    (dict(hidden_size=64.0), "hidden_size must be a positive integer"),
    (dict(pad_token_id=100), r"pad_token_id must be null or an id in \[0, vocab_size=100\)"),
    (dict(attention="flash"), "attention 'flash' is not one of eager, sdpa"),
])
def test_invalid_values_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        BertConfig(**{**TINY, **changes})


@pytest.mark.parametrize("extra, message", [
    ({"model_type": "albert"}, "model_type is 'albert'"),
    ({"embedding_size": 128}, "ALBERT setting"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key' is not supported"),
    ({"is_decoder": True}, "is_decoder=True is not supported"),
])
def test_architectures_this_model_does_not_implement_are_refused(tmp_path, extra, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **extra}))
    with pytest.raises(ConfigError, match=message) as info:
        BertConfig.from_json_file(path)
    assert str(path) in str(info.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        BertConfig.from_json_file(tmp_path / "missing.json")
    utf16 = tmp_path / "utf16.json"
    utf16.write_text(json.dumps(TINY), encoding="utf-16")
    with pytest.raises(ConfigError, match=fr"{utf16}: line 1 \(byte 0\): the config file is not UTF-8 text"):
        BertConfig.from_json_file(utf16)
    broken = tmp_path / "bert_config.json"
    broken.write_text("{\"vocab_size\": 10,")
    with pytest.raises(ConfigError, match=f"{broken}: line 1 column 19: malformed JSON: Expecting property name"):
        BertConfig.from_json_file(broken)
    # what json.loads raises besides JSONDecodeError: too deep for the parser, an integer too long to convert
    broken.write_text("[" * 100_000)
    with pytest.raises(ConfigError, match=f"{broken}: malformed JSON: nested too deeply to read"):
        BertConfig.from_json_file(broken)
    broken.write_text('{"vocab_size": ' + "9" * 5000 + "}")
    with pytest.raises(ConfigError, match=f"{broken}: malformed JSON: Exceeds the limit"):
        BertConfig.from_json_file(broken)
    broken.write_text(json.dumps({**TINY, "num_attention_heads": 3}))
    with pytest.raises(ConfigError, match=f"{broken}: hidden_size 64 is not divisible"):
        BertConfig.from_json_file(broken)
    broken.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        BertConfig.from_json_file(broken)
    # json.loads would keep the second hidden_size without a word
    broken.write_text(json.dumps(TINY)[:-1] + ', "hidden_size": 32}')
    with pytest.raises(ConfigError, match=f"{broken}: key 'hidden_size': appears twice in one JSON object"):
        BertConfig.from_json_file(broken)


def test_every_attention_name_is_implemented_in_torch():
    import cnbert.torch.attention as torch_attention
    assert set(torch_attention.ATTENTION_FUNCTIONS) == set(ATTENTION_IMPLEMENTATIONS)


def test_framework_neutral_modules_import_neither_torch_nor_tensorflow():
    code = ("import sys, cnbert.config, cnbert.checkpoints; "
            "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("layers, groups, disputed", [(18, 14, "9"), (22, 22, "15")])
def test_albert_groups_the_implementations_assign_differently_are_refused(layers, groups, disputed):
    """Layer i's group is floor(i * groups / layers); Google's ALBERT computes int(i / layers * groups)
    and transformers int(i / (layers / groups)) in floating point, which disagree for these layers."""
    from cnbert.config import AlbertConfig

    with pytest.raises(ConfigError, match=fr"num_hidden_groups {groups} with num_hidden_layers {layers}: .* put "
                                          fr"layer\(s\) {disputed} in different groups"):
        AlbertConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=layers, num_hidden_groups=groups)
    for layers, groups in ((24, 1), (4, 2), (12, 3), (6, 6), (24, 24)):  # every layer agreed on
        AlbertConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=layers, num_hidden_groups=groups)
