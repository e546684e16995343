"""The canonical BERT weight layout (Hugging Face `BertModel` state-dict names) and strict matching
of a checkpoint against a model's expected names and shapes.

Framework-neutral: values are whatever the framework reads (numpy arrays, torch tensors); only
their names and `.shape` are used here, so the PyTorch and TensorFlow models share one set of rules.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from typing import Any, Mapping

from cnbert.config import BertConfig
from cnbert.errors import DataError

# Prefix of the encoder inside task models (Hugging Face's `base_model_prefix` for BERT).
ENCODER_PREFIX = "bert."

# Checkpoint keys that are known and deliberately unused: the pretraining heads (masked LM and next
# sentence prediction) and the position-id buffer older transformers versions saved.
PRETRAINING_HEAD_PREFIXES = ("cls.predictions.", "cls.seq_relationship.")
_LEGACY_BUFFERS = ("embeddings.position_ids",)
_ENCODER_PARTS = ("embeddings.", "encoder.", "pooler.")
_LEGACY_LAYER_NORM_NAMES = {".LayerNorm.gamma": ".LayerNorm.weight", ".LayerNorm.beta": ".LayerNorm.bias"}

# Every name a BertModel state dict can hold (layer numbers vary).
BERT_NAME = re.compile(
    r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight"
    r"|embeddings\.LayerNorm\.(weight|bias)"
    r"|encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)\.(weight|bias)"
    r"|encoder\.layer\.\d+\.(attention\.output|output)\.LayerNorm\.(weight|bias)"
    r"|pooler\.dense\.(weight|bias)"
)

_MAX_NAMES_SHOWN = 12

logger = logging.getLogger(__name__)


class CheckpointError(DataError):
    """A checkpoint that does not fit the model: the message names the file and the tensors."""


@contextlib.contextmanager
def reading_weights(path):
    """Turns the error a weights reader raises on a damaged file (a truncated safetensors file, a
    pickle that is not a state dict, a TF checkpoint index cut short) into a CheckpointError naming
    the file. Errors that are already CheckpointErrors, and MemoryError, pass unchanged."""
    try:
        yield
    except (CheckpointError, MemoryError):
        raise
    except Exception as error:
        raise CheckpointError(path, "", f"cannot read the weights ({_reader_problem(error)})") from error


def _reader_problem(error: Exception) -> str:
    text = str(error)
    if "WeightsUnpickler error:" in text:
        # torch.load(weights_only=True) leads with advice to load the file unsafely; keep only what
        # it refused, and say why cnbert will not do otherwise.
        refused = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        refused = " ".join(refused.split()).split(" Please use")[0]
        return (f"{type(error).__name__}: torch.load with weights_only=True refused it: {refused}; cnbert reads "
                "only plain {name: tensor} state dicts and never unpickles other objects")
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    return f"{type(error).__name__}: {lines[0]}"


def bert_parameter_shapes(config: BertConfig, add_pooling_layer: bool = True) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a Hugging Face `BertModel` state dict (no "bert." prefix).

    Linear weights are [out, in] (the PyTorch layout); Google TF kernels are the transpose.
    """
    V, H, I = config.vocab_size, config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (V, H),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, H),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, H),
        "embeddings.LayerNorm.weight": (H,),
        "embeddings.LayerNorm.bias": (H,),
    }
    for i in range(config.num_hidden_layers):
        layer = f"encoder.layer.{i}."
        for linear in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[f"{layer}{linear}.weight"] = (H, H)
            shapes[f"{layer}{linear}.bias"] = (H,)
        shapes[f"{layer}intermediate.dense.weight"] = (I, H)
        shapes[f"{layer}intermediate.dense.bias"] = (I,)
        shapes[f"{layer}output.dense.weight"] = (H, I)
        shapes[f"{layer}output.dense.bias"] = (H,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{layer}{norm}.weight"] = (H,)
            shapes[f"{layer}{norm}.bias"] = (H,)
    if add_pooling_layer:
        shapes["pooler.dense.weight"] = (H, H)
        shapes["pooler.dense.bias"] = (H,)
    return shapes


@dataclasses.dataclass
class LoadReport:
    """What loading a checkpoint did (both frameworks): source, the weights file read; loaded, model
    keys copied from it; initialised, task-head keys it lacked (left freshly initialised); ignored,
    its keys deliberately unused (pretraining heads, an unused pooler)."""

    source: str
    loaded: list[str]
    initialised: list[str]
    ignored: list[str]

    @classmethod
    def of(cls, plan: "LoadPlan", source: str) -> "LoadReport":
        """The report of a carried-out LoadPlan, logged (freshly initialised heads as a warning)."""
        report = cls(source=source, loaded=sorted(plan.tensors), initialised=plan.initialised,
                     ignored=sorted(plan.ignored))
        logger.info("%s: loaded %d tensors; ignored %s", source, len(report.loaded), report.ignored or "nothing")
        if report.initialised:
            logger.warning("%s: freshly initialised (not in the checkpoint): %s", source, report.initialised)
        return report


class ConvertedTFWeights(dict):
    """Weights converted from a TF checkpoint, under model names, that remember where each came from:
    `sources` maps a model name to (TF variable, shape as stored), so that plan_load's errors name
    what `tf.train.list_variables` shows, not only the converted name and transposed shape."""

    def __init__(self, weights: Mapping[str, Any], sources: Mapping[str, tuple[str, tuple[int, ...]]]):
        super().__init__(weights)
        self.sources = dict(sources)


@dataclasses.dataclass
class LoadPlan:
    """What a strict load does. `tensors` maps model names to checkpoint values whose shapes match;
    `initialised` lists model keys of task heads absent from the checkpoint (left freshly
    initialised); `ignored` lists checkpoint keys known to be unused (pretraining heads, the pooler
    when the model has none, legacy buffers)."""

    tensors: dict[str, Any]
    initialised: list[str]
    ignored: list[str]


def normalize_checkpoint_names(state: Mapping[str, Any], encoder_prefix: str, source: str,
                               model_prefix: str = ENCODER_PREFIX) -> dict[str, Any]:
    """Rename checkpoint keys to the model's convention.

    Encoder keys are accepted with or without the architecture's `model_prefix` ("bert." here,
    "albert." for ALBERT: a state dict saved from BertForQuestionAnswering has it, one saved from
    BertModel does not) and given `encoder_prefix`; LayerNorm gamma/beta (old pytorch-pretrained-bert
    names) become weight/bias, as transformers does.
    """
    renamed: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        name = key
        for old, new in _LEGACY_LAYER_NORM_NAMES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        bare = name[len(model_prefix):] if name.startswith(model_prefix) else name
        if bare.startswith(_ENCODER_PARTS):
            name = encoder_prefix + bare
        if name in renamed:
            raise CheckpointError(source, "", f"keys {origin[name]!r} and {key!r} both name the model weight {name!r}")
        renamed[name] = value
        origin[name] = key
    return renamed


def plan_load(expected_shapes: Mapping[str, tuple[int, ...]], state: Mapping[str, Any], *,
              head_prefixes: tuple[str, ...] = (), source: str = "checkpoint",
              model_prefix: str = ENCODER_PREFIX,
              pretraining_head_prefixes: tuple[str, ...] = PRETRAINING_HEAD_PREFIXES) -> LoadPlan:
    """Match a checkpoint against a model strictly; raise CheckpointError listing every problem.

    expected_shapes: the model's state-dict names and shapes (task models hold the encoder under
    `model_prefix`, "bert." for BERT). head_prefixes: task heads that may be absent from the
    checkpoint (then initialised fresh), e.g. ("qa_outputs.",); a head must be wholly present or
    wholly absent. pretraining_head_prefixes: checkpoint heads that are ignored and reported.
    Errors: missing encoder weights, unexpected keys (other than the ignorable ones above), and
    shapes that disagree (naming the tensor and both shapes).
    """
    encoder_prefix = model_prefix if any(k.startswith(model_prefix) for k in expected_shapes) else ""
    tf_sources = getattr(state, "sources", {})  # ConvertedTFWeights'

    def stored(name: str) -> str:
        """" (TF variable V, stored as [a, b])" for a weight converted from a TF checkpoint."""
        found = tf_sources.get(name[len(encoder_prefix):] if name.startswith(encoder_prefix) else name)
        return f" (TF variable {found[0]}, stored as {list(found[1])})" if found else ""

    state = normalize_checkpoint_names(state, encoder_prefix, source, model_prefix)
    has_pooler = any(k.startswith(f"{encoder_prefix}pooler.") for k in expected_shapes)
    ignorable = pretraining_head_prefixes + tuple(encoder_prefix + b for b in _LEGACY_BUFFERS)
    if not has_pooler:
        ignorable += (f"{encoder_prefix}pooler.",)

    tensors, ignored, unexpected, wrong_shapes = {}, [], [], []
    for name, value in state.items():
        if name in expected_shapes:
            have, want = tuple(value.shape), tuple(expected_shapes[name])
            if have != want:
                wrong_shapes.append(f"{name}: the checkpoint has shape {have} but the model expects {want}"
                                    f"{_shape_hint(name, have, want)}{stored(name)}")
            tensors[name] = value
        elif name.startswith(ignorable):
            ignored.append(name)
        else:
            unexpected.append(name)

    missing = [name for name in expected_shapes if name not in state]
    initialised, missing_required = [], []
    for name in missing:
        head = next((p for p in head_prefixes if name.startswith(p)), None)
        if head is None:
            missing_required.append(name)
        elif any(k.startswith(head) for k in state):
            missing_required.append(name)  # half a head is a broken checkpoint, not a fresh head
        else:
            initialised.append(name)

    problems = []
    if missing_required:
        converted = " (named as transformers names the converted TF variables)" if tf_sources else ""
        problems.append(f"missing weights {_names(missing_required)}{converted}")
    if unexpected:
        problems.append(f"unexpected keys {_names([name + stored(name) for name in unexpected])} (only the pretraining heads "
                        f"{'/'.join(p + '*' for p in pretraining_head_prefixes)} may be left unused)")
    problems.extend(wrong_shapes)
    if problems:
        raise CheckpointError(source, "", "does not fit the model: " + "; ".join(problems))
    return LoadPlan(tensors=tensors, initialised=initialised, ignored=ignored)


def _shape_hint(name: str, have: tuple, want: tuple) -> str:
    fields = {"embeddings.word_embeddings.weight": "vocab_size",
              "embeddings.position_embeddings.weight": "max_position_embeddings",
              "embeddings.token_type_embeddings.weight": "type_vocab_size"}
    for suffix, field in fields.items():
        if name.endswith(suffix) and have[1:] == want[1:]:
            return f" (config {field}={want[0]}, checkpoint has {have[0]})"
    return ""


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    more = len(names) - _MAX_NAMES_SHOWN
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"
