"""BERT and ALBERT model configurations, shared by the PyTorch and TensorFlow models (imports neither).

Reads Hugging Face `config.json` and Google's `bert_config.json` (which has no `layer_norm_eps`:
Google, HIT and brightmart BERT checkpoints were trained with 1e-12, the default here) and writes a
`config.json` that `transformers.BertConfig` reads (model_type "bert"). `AlbertConfig` adds the
ALBERT settings (Hugging Face / Google `albert_config.json`, brightmart `albert_config_*.json`);
`config_from_dict` and `read_config` pick the class from the file. siBert's `setting.txt` (its
pretraining arguments, siBert's own keys) is read as the BertConfig it describes (see SIBERT_KEYS).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnbert.errors import DataError
from cnbert.io_utils import parse_json_text, read_text_file, write_json

# "gelu" is the exact erf form (what Google/HIT configs mean); "gelu_new" and "gelu_pytorch_tanh"
# are Hugging Face's names for the tanh approximation; "quick_gelu" is Hugging Face's name for the
# sigmoid form x·σ(1.702x) (blocksparse's fast_gelu, siBert's FFN activation). The sigmoid form differs
# from erf GELU by up to 2e-2, so it is used only where a config names it, never for "gelu".
# GELU_FORMS: each GELU's form, the `approximate` argument of cnbert.kernels' and cnbert.tf.ops' GELUs.
GELU_FORMS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "quick_gelu": "sigmoid"}
HIDDEN_ACTIVATIONS = (*GELU_FORMS, "relu")

# Attention implementations, chosen by name; each framework maps a name to its function.
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "fused")

# Keys of a checkpoint config that change the architecture in ways this model does not implement:
# accepting them silently would load weights into the wrong computation.
_UNSUPPORTED_SETTINGS = {
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
}


# ALBERT embedding layouts:
#   "albert": Google ALBERT / Hugging Face AlbertModel. Word, position and token-type embeddings and
#       their LayerNorm are E-dim (embedding_size); encoder.embedding_hidden_mapping_in (E -> H, with
#       bias) then feeds num_hidden_groups groups of inner_group_num layers.
#   "factorized_word": brightmart albert_zh (modeling.py, embedding_lookup_factorized). Only the word
#       embeddings are E-dim: `bert/embeddings/word_embeddings_2` [E, H], a plain matrix without bias,
#       projects them to H before the H-dim token-type and position embeddings are added and the H-dim
#       LayerNorm applied; then one BERT layer `bert/encoder/layer_shared` (post-LayerNorm, BERT
#       sub-names) runs num_hidden_layers times. transformers has no class for this layout.
ALBERT_EMBEDDING_LAYOUTS = ("albert", "factorized_word")

# model_type written for the factorized layout. An unknown model_type makes transformers refuse the
# directory, instead of loading it into AlbertModel with most weights missing and freshly initialised.
FACTORIZED_ALBERT_MODEL_TYPE = "cnbert_factorized_albert"
_ALBERT_LAYOUT_OF_MODEL_TYPE = {"albert": "albert", FACTORIZED_ALBERT_MODEL_TYPE: "factorized_word"}

# What the code that writes each kind of ALBERT config assumes for a key the file leaves out, where
# that differs from BertConfig's defaults: transformers' AlbertConfig (model_type "albert") and Google
# ALBERT's modeling.AlbertConfig (albert_config.json, the "albert" layout without a model_type) both
# default to albert_xxlarge. No weight's shape reveals the number of heads, the activation or the
# dropout, so BERT's defaults would load such a checkpoint strictly and compute something else.
# brightmart's albert_zh reads its configs with BERT's BertConfig, whose defaults are cnbert's.
_ALBERT_XXLARGE = {"hidden_size": 4096, "num_attention_heads": 64, "intermediate_size": 16384,
                   "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
_ALBERT_DEFAULTS = {
    "transformers": {**_ALBERT_XXLARGE, "vocab_size": 30000, "hidden_act": "gelu_new"},
    "google": {**_ALBERT_XXLARGE, "hidden_act": "gelu"},  # computed with the tanh form (README: kept as erf)
}

# ALBERT config keys whose other values select architectures this model does not implement: Google
# ALBERT's experimental structures (every released checkpoint has these values) and brightmart's
# pre-LayerNorm variant (modeling_preln.py; its released configs say "postln" when they say anything).
_ALBERT_UNSUPPORTED_SETTINGS = {
    "net_structure_type": 0,
    "gap_size": 0,
    "num_memory_blocks": 0,
    "down_scale_factor": 1,
    "ln_type": "postln",
}


# siBert (ewrfcas/SiBert_tensorflow) has no JSON config: pretrain.py's argparse arguments describe the
# model, and tf_ops/utils.py check_args writes them all, one "name: value" line each between two
# dashed lines, to setting.txt beside the checkpoint. The model (models/SiBert.py) is post-LayerNorm
# BERT with blocksparse's fast_gelu in the FFN and LayerNorm epsilon 1e-5; only these keys describe it:
# siBert key -> BertConfig field (mlp_ratio gives intermediate_size = mlp_ratio * hidden_size).
SIBERT_SETTINGS_FILE = "setting.txt"
SIBERT_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "mlp_ratio": None,
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
}
SIBERT_ACTIVATION, SIBERT_LAYER_NORM_EPS = "quick_gelu", 1e-5
_SIBERT_DEFAULT_DROPOUT = 0.1  # pretrain.py's default for --dropout


class ConfigError(ValueError):
    """An invalid model configuration; the message names the source file (when known) and the field."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    attention: str = "sdpa"
    # Dropout on the input of a classification head (sentence and token classifiers, CJRC's answer
    # class); None takes hidden_dropout_prob, as transformers' BertConfig does (key
    # `classifier_dropout`; Google's run_classifier hard-codes 0.1, BERT's hidden dropout).
    classifier_dropout: float | None = None

    def __post_init__(self):
        self._validate()

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu_form(self) -> str | None:
        """hidden_act's GELU form (GELU_FORMS); None for relu."""
        return GELU_FORMS.get(self.hidden_act)

    @property
    def classifier_dropout_rate(self) -> float:
        return self.hidden_dropout_prob if self.classifier_dropout is None else self.classifier_dropout

    def replace(self, **changes) -> "BertConfig":
        """A copy with some fields changed (validated again), e.g. `config.replace(attention="eager")`."""
        return dataclasses.replace(self, **changes)

    # ---- reading -------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> "BertConfig":
        """Build from a Hugging Face or Google config dict. Keys this model does not use are ignored,
        except ones that would change the architecture (another model_type, relative positions,
        decoder settings, ALBERT's embedding_size), which raise ConfigError."""
        where = _where(source)
        _check_mapping(values, where)
        model_type = values.get("model_type", "bert")
        if model_type != "bert":
            raise ConfigError(f"{where}model_type is {model_type!r}; this is the BERT model (model_type 'bert'); "
                              "cnbert.config.config_from_dict reads any supported model")
        if "embedding_size" in values:
            raise ConfigError(f"{where}has embedding_size={values['embedding_size']!r}, an ALBERT setting; "
                              "this is the BERT model")
        if is_sibert_settings(values):
            raise ConfigError(f"{where}has siBert's keys (n_layer, n_head, mlp_ratio); "
                              "cnbert.config.config_from_dict converts them (sibert_config_values)")
        return cls._from_known_keys(values, where)

    @classmethod
    def _from_known_keys(cls, values: Mapping[str, Any], where: str) -> "BertConfig":
        for key, supported in _UNSUPPORTED_SETTINGS.items():
            if key in values and values[key] != supported:
                raise ConfigError(f"{where}{key}={values[key]!r} is not supported (only {supported!r})")
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in values.items() if key in fields})
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None

    @classmethod
    def from_json_file(cls, path) -> "BertConfig":
        """Read `config.json` (Hugging Face) or `bert_config.json` (Google)."""
        return cls.from_dict(read_config_dict(path), source=str(path))

    # ---- writing -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """All fields plus model_type "bert"; `from_dict(to_dict())` gives an equal config."""
        return {"model_type": "bert", **dataclasses.asdict(self)}

    def to_json_file(self, path, architectures: list[str] | None = None, labels: Sequence[str] | None = None) -> None:
        """Write a config.json that `transformers.BertConfig.from_pretrained` reads (atomically);
        a classifier's `labels` (names in output order) become id2label / label2id, which give
        transformers its num_labels."""
        values = self.to_dict()
        if architectures:
            values = {"architectures": list(architectures), **values}
        if labels is not None:
            values.update(label_maps(labels))
        write_json(path, values)

    # ---- validation ----------------------------------------------------------------------------

    def _validate(self) -> None:
        def fail(problem):
            raise ConfigError(problem)

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                fail(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            fail(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                 f"{self.num_attention_heads}")
        if self.hidden_act not in HIDDEN_ACTIVATIONS:
            fail(f"hidden_act {self.hidden_act!r} is not supported; choose one of {', '.join(HIDDEN_ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if name == "classifier_dropout" and value is None:
                continue
            if not _is_number(value) or not 0.0 <= value < 1.0:
                fail(f"{name} must be a number in [0, 1), got {value!r}")
        for name in ("initializer_range", "layer_norm_eps"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 < value < 1.0:
                fail(f"{name} must be a number in (0, 1), got {value!r}")
        if self.pad_token_id is not None and (not _is_int(self.pad_token_id)
                                              or not 0 <= self.pad_token_id < self.vocab_size):
            fail(f"pad_token_id must be null or an id in [0, vocab_size={self.vocab_size}), got {self.pad_token_id!r}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            fail(f"attention {self.attention!r} is not one of {', '.join(ATTENTION_IMPLEMENTATIONS)}")


@dataclasses.dataclass(frozen=True)
class AlbertConfig(BertConfig):
    """ALBERT: the BERT settings plus factorized embeddings and cross-layer parameter sharing.

    embedding_size: E, the width of the word embeddings (of all embeddings in the "albert" layout).
    num_hidden_groups: groups of layers with their own weights; layer i of num_hidden_layers uses group
        i * num_hidden_groups // num_hidden_layers (a config where Google's or transformers' float
        formula gives another group for some layer is refused). inner_group_num: layers inside each group.
    embedding_layout: one of ALBERT_EMBEDDING_LAYOUTS (see there); it decides model_type on writing.
    """

    embedding_size: int = 128
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    embedding_layout: str = "albert"
    # ALBERT's own: 0.1 whatever the hidden dropout, which ALBERT configs set to 0. Google ALBERT's
    # classifier_utils and brightmart albert_zh's run_classifier hard-code it; transformers'
    # AlbertConfig defaults `classifier_dropout_prob`, the key it is read from and written as, to it.
    classifier_dropout: float | None = 0.1

    @property
    def model_type(self) -> str:
        return "albert" if self.embedding_layout == "albert" else FACTORIZED_ALBERT_MODEL_TYPE

    def group_of_layer(self, layer: int) -> int:
        """The group whose weights layer `layer` runs: floor(layer * groups / layers), computed exactly
        (_validate refuses the counts where Google's and transformers' float arithmetic disagree)."""
        return layer * self.num_hidden_groups // self.num_hidden_layers

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> "AlbertConfig":
        """Build from a Hugging Face config (model_type "albert"), one cnbert wrote, or a Google / brightmart
        `albert_config*.json`. Those two name no model_type, and only the checkpoint's variable names
        tell their layouts apart, so such a dict must carry embedding_layout (read_pretrained_config in
        cnbert.checkpoints adds it from the checkpoint)."""
        where = _where(source)
        _check_mapping(values, where)
        model_type = values.get("model_type")
        layout = values.get("embedding_layout")
        if model_type is not None:
            implied = _ALBERT_LAYOUT_OF_MODEL_TYPE.get(model_type)
            if implied is None:
                raise ConfigError(f"{where}model_type is {model_type!r}; this is the ALBERT model (model_type "
                                  f"{' or '.join(map(repr, _ALBERT_LAYOUT_OF_MODEL_TYPE))})")
            if layout is not None and layout != implied:
                raise ConfigError(f"{where}model_type {model_type!r} contradicts embedding_layout {layout!r}")
            values = {**values, "embedding_layout": implied}
        elif layout is None:
            raise ConfigError(f"{where}an ALBERT config without model_type or embedding_layout: say which layout "
                              f"({', '.join(ALBERT_EMBEDDING_LAYOUTS)}) it is, or read the model directory with "
                              "cnbert.checkpoints.read_pretrained_config, which tells it from the checkpoint")
        # a key the file leaves out takes the default of the code that wrote the file
        if model_type == "albert":
            values = {**_ALBERT_DEFAULTS["transformers"], **values}
        elif model_type is None and values["embedding_layout"] == "albert":
            values = {**_ALBERT_DEFAULTS["google"], **values}
        for key, supported in _ALBERT_UNSUPPORTED_SETTINGS.items():
            if key in values and values[key] != supported:
                raise ConfigError(f"{where}{key}={values[key]!r} is not supported (only {supported!r})")
        if "classifier_dropout" in values:
            raise ConfigError(f"{where}has classifier_dropout, BERT's key; ALBERT's is classifier_dropout_prob")
        if "classifier_dropout_prob" in values:
            values = {**values, "classifier_dropout": values["classifier_dropout_prob"]}
        return cls._from_known_keys(values, where)

    def to_dict(self) -> dict[str, Any]:
        """All fields plus model_type ("albert", which transformers.AlbertConfig reads, or
        FACTORIZED_ALBERT_MODEL_TYPE), classifier_dropout under transformers' ALBERT name,
        classifier_dropout_prob; `from_dict(to_dict())` gives an equal config."""
        values = dataclasses.asdict(self)
        values["classifier_dropout_prob"] = values.pop("classifier_dropout")
        return {"model_type": self.model_type, **values}

    def _validate(self) -> None:
        super()._validate()
        if self.classifier_dropout is None:  # transformers' AlbertConfig refuses a null classifier_dropout_prob
            raise ConfigError("classifier_dropout_prob must be a number in [0, 1) for ALBERT, got None")
        for name in ("embedding_size", "num_hidden_groups", "inner_group_num"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_hidden_groups > self.num_hidden_layers:
            raise ConfigError(f"num_hidden_groups {self.num_hidden_groups} exceeds num_hidden_layers "
                              f"{self.num_hidden_layers}")
        layers, groups = self.num_hidden_layers, self.num_hidden_groups
        disputed = [i for i in range(layers) if len({self.group_of_layer(i),
                                                     int(i / layers * groups),  # Google ALBERT's modeling.py
                                                     int(i / (layers / groups))}) > 1]  # transformers'
        if disputed:
            # float rounding: the implementations disagree for these layers (exact arithmetic sides with
            # one or the other), and no checkpoint says which code trained it
            raise ConfigError(f"num_hidden_groups {groups} with num_hidden_layers {layers}: Google's ALBERT code "
                              "(int(i / layers * groups)) and transformers (int(i / (layers / groups))) put layer(s) "
                              f"{', '.join(map(str, disputed))} in different groups, so the same weights would be "
                              "different models; every released ALBERT has num_hidden_groups 1")
        if self.embedding_layout not in ALBERT_EMBEDDING_LAYOUTS:
            raise ConfigError(f"embedding_layout {self.embedding_layout!r} is not one of "
                              f"{', '.join(ALBERT_EMBEDDING_LAYOUTS)}")
        if self.embedding_layout == "factorized_word" and (self.num_hidden_groups, self.inner_group_num) != (1, 1):
            raise ConfigError("the factorized_word layout (brightmart albert_zh) shares one layer: num_hidden_groups "
                              f"and inner_group_num must be 1, got {self.num_hidden_groups} and {self.inner_group_num}")


def config_class_for(values: Mapping[str, Any]) -> type[BertConfig]:
    """AlbertConfig for an ALBERT config dict (its model_type, or without one an embedding_size), else BertConfig."""
    model_type = values.get("model_type")
    if model_type in _ALBERT_LAYOUT_OF_MODEL_TYPE or (model_type is None and "embedding_size" in values):
        return AlbertConfig
    return BertConfig


def config_from_dict(values: Mapping[str, Any], source: str | None = None) -> BertConfig:
    """A BertConfig or AlbertConfig, whichever the dict describes (see config_class_for); a dict of
    siBert settings (see is_sibert_settings) gives the BertConfig of that siBert model."""
    _check_mapping(values, _where(source))
    if is_sibert_settings(values):
        values = sibert_config_values(values, source=source)
    return config_class_for(values).from_dict(values, source=source)


def read_config(path) -> BertConfig:
    """The BertConfig or AlbertConfig in a config file (config.json, bert_config.json, albert_config*.json,
    siBert's setting.txt)."""
    return config_from_dict(read_config_dict(path), source=str(path))


def is_sibert_settings(values: Mapping[str, Any]) -> bool:
    """Whether a config dict uses siBert's names (n_layer, n_head, mlp_ratio) for the architecture."""
    return any(key in values for key in ("n_layer", "n_head", "mlp_ratio"))


def sibert_config_values(settings: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """The BertConfig values (model_type "bert") of a siBert model described by its pretraining
    settings: every SIBERT_KEYS key is required, `dropout` (both dropout rates here) defaults to
    pretrain.py's 0.1, the activation is "quick_gelu" and LayerNorm epsilon 1e-5 (models/SiBert.py
    hard-codes both). Values may be numbers or the strings setting.txt holds."""
    where = _where(source)
    missing = [key for key in SIBERT_KEYS if key not in settings]
    if missing:
        raise ConfigError(f"{where}siBert settings lack {', '.join(missing)}")
    numbers = {key: _setting_int(settings[key], key, where) for key in SIBERT_KEYS}
    dropout = _setting_float(settings.get("dropout", _SIBERT_DEFAULT_DROPOUT), "dropout", where)
    values = {field: numbers[key] for key, field in SIBERT_KEYS.items() if field is not None}
    return {"model_type": "bert", **values, "intermediate_size": numbers["mlp_ratio"] * numbers["hidden_size"],
            "hidden_act": SIBERT_ACTIVATION, "layer_norm_eps": SIBERT_LAYER_NORM_EPS,
            "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}


def read_sibert_settings(path) -> dict[str, str]:
    """The "name: value" lines of a siBert setting.txt (values as written, strings), without the
    dashed lines around them; ConfigError naming the file and line for anything else."""
    path = Path(path)
    try:
        text = read_text_file(path, "siBert setting file")
    except DataError as e:
        raise ConfigError(str(e)) from e
    settings = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("---"):
            continue
        # check_args writes "%s: %s": an empty string argument leaves "name: " (or "name:" once trimmed)
        name, separator, value = line.rstrip("\r").partition(":")
        value = value.removeprefix(" ")
        if not separator or not name.isidentifier():
            raise ConfigError(f"{path}: line {line_no}: expected \"name: value\" (siBert's setting.txt), got {line!r}")
        if name in settings:
            raise ConfigError(f"{path}: line {line_no}: {name} is set twice")
        settings[name] = value
    return settings


def read_config_dict(path) -> dict[str, Any]:
    """The JSON object in a config file; ConfigError naming the file when it is missing or not JSON.
    A siBert setting.txt gives its BertConfig values (sibert_config_values)."""
    path = Path(path)
    if path.name == SIBERT_SETTINGS_FILE:
        return sibert_config_values(read_sibert_settings(path), source=str(path))
    try:
        values = parse_json_text(path, read_text_file(path, "config file"))
    except DataError as e:
        raise ConfigError(str(e)) from e
    _check_mapping(values, _where(str(path)))
    return values


def check_label_names(labels: Sequence[str]) -> tuple[str, ...]:
    """A classifier's label names as a tuple: at least two distinct non-empty strings."""
    labels = tuple(labels)
    if len(labels) < 2 or not all(isinstance(label, str) and label for label in labels) \
            or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be at least two distinct non-empty strings, got {list(labels)}")
    return labels


def label_maps(labels: Sequence[str]) -> dict[str, dict]:
    """config.json's id2label / label2id for label names in output order (JSON keys are strings)."""
    labels = check_label_names(labels)
    return {"id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)}}


def saved_label_names(values: Mapping[str, Any], source: str | None = None) -> tuple[str, ...] | None:
    """The label names, in output order, that a config dict's id2label gives; None when it has none,
    or only transformers' placeholders LABEL_0, LABEL_1, ... (which name nothing)."""
    where = _where(source)
    id2label = values.get("id2label")
    if id2label is None:
        return None
    if not isinstance(id2label, Mapping):
        raise ConfigError(f"{where}id2label must be an object {{index: label}}, got {type(id2label).__name__}")
    try:
        by_index = {int(key): label for key, label in id2label.items()}
    except ValueError:
        raise ConfigError(f"{where}id2label has a key that is not an integer: {sorted(id2label)}") from None
    if sorted(by_index) != list(range(len(by_index))) or not all(isinstance(v, str) for v in by_index.values()):
        raise ConfigError(f"{where}id2label must map 0, 1, ... n-1 to label names, got {id2label}")
    names = tuple(by_index[i] for i in range(len(by_index)))
    if names == tuple(f"LABEL_{i}" for i in range(len(names))):
        return None
    return names


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _check_mapping(values, where: str) -> None:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}expected a JSON object, got {type(values).__name__}")


def _setting_int(value, key: str, where: str) -> int:
    # setting.txt holds str(value); a JSON config holds numbers
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not _is_int(value):
        raise ConfigError(f"{where}siBert setting {key} must be an integer, got {value!r}")
    return value


def _setting_float(value, key: str, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}siBert setting {key} must be a number, got {value!r}") from None
    if not _is_number(value):
        raise ConfigError(f"{where}siBert setting {key} must be a number, got {value!r}")
    return float(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)
