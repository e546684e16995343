"""BERT model configuration, shared by the PyTorch and TensorFlow models (imports neither).

Reads Hugging Face `config.json` and Google's `bert_config.json` (which has no `layer_norm_eps`:
Google, HIT and brightmart BERT checkpoints were trained with 1e-12, the default here) and writes a
`config.json` that `transformers.BertConfig` reads (model_type "bert").
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

from cnbert.io_utils import write_json

# "gelu" is the exact erf form (what Google/HIT configs mean); "gelu_new" and "gelu_pytorch_tanh"
# are Hugging Face's names for the tanh approximation. Anything else is refused rather than guessed:
# the sigmoid approximation x·σ(1.702x) differs from erf GELU by up to 2e-2.
HIDDEN_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

# Attention implementations, chosen by name; each framework maps a name to its function.
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")

# Keys of a checkpoint config that change the architecture in ways this model does not implement:
# accepting them silently would load weights into the wrong computation.
_UNSUPPORTED_SETTINGS = {
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
}


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

    def __post_init__(self):
        self._validate()

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **changes) -> "BertConfig":
        """A copy with some fields changed (validated again), e.g. `config.replace(attention="eager")`."""
        return dataclasses.replace(self, **changes)

    # ---- reading -------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> "BertConfig":
        """Build from a Hugging Face or Google config dict. Keys this model does not use are ignored,
        except ones that would change the architecture (another model_type, relative positions,
        decoder settings, ALBERT's embedding_size), which raise ConfigError."""
        where = f"{source}: " if source else ""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}expected a JSON object, got {type(values).__name__}")
        model_type = values.get("model_type", "bert")
        if model_type != "bert":
            raise ConfigError(f"{where}model_type is {model_type!r}; this is the BERT model (model_type 'bert')")
        if "embedding_size" in values:
            raise ConfigError(f"{where}has embedding_size={values['embedding_size']!r}, an ALBERT setting; "
                              "this is the BERT model")
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
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(values, source=str(path))

    # ---- writing -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """All fields plus model_type "bert"; `from_dict(to_dict())` gives an equal config."""
        return {"model_type": "bert", **dataclasses.asdict(self)}

    def to_json_file(self, path, architectures: list[str] | None = None) -> None:
        """Write a config.json that `transformers.BertConfig.from_pretrained` reads (atomically)."""
        values = self.to_dict()
        if architectures:
            values = {"architectures": list(architectures), **values}
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
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)
