"""Weight exchange for the Keras models through the framework-neutral canonical layout (the PyTorch
models' state-dict names: Hugging Face BertModel / AlbertModel / BertForQuestionAnswering ...,
cnbert's for the factorized ALBERT layout; numpy arrays, Linear weights [out, in]), strictly in
both directions; Hugging Face compatible model directories.

A model's checkpoint-named variables (bert/encoder/layer_0/attention/self/query/kernel, ...) map to
canonical names through the encoder's canonical_names (cnbert.checkpoints' Google BERT and ALBERT
mappings); task heads map as qa_outputs/kernel <-> qa_outputs.weight (transposed). Every load goes through cnbert.checkpoints.plan_load, so a
missing, unexpected or mis-shaped tensor is an error naming it; only a task head absent from a
pretrained checkpoint may stay freshly initialised, and the report lists it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import keras
import numpy as np
from safetensors.numpy import load_file, save_file

from cnbert.checkpoints import (
    CheckpointError,
    ConvertedTFWeights,
    LoadReport,
    check_loaded_labels,
    check_vocabulary,
    find_weights,
    plan_load,
    read_pretrained_config,
    read_tf_weights,
    reading_weights,
    write_model_directory,
)
from cnbert.config import AlbertConfig, BertConfig
from cnbert.tasks import TASK_HEADS, output_labels
from cnbert.tf.albert import (AlbertForCJRC, AlbertForSequenceClassification, AlbertForSpanExtraction,
                              AlbertForTokenClassification)
from cnbert.tf.heads import (BertForCJRC, BertForSequenceClassification, BertForSpanExtraction,
                             BertForTokenClassification)
from cnbert.tf.modeling import BertModel


@dataclasses.dataclass(frozen=True)
class CanonicalSlot:
    variable: keras.Variable
    transposed: bool  # the canonical array is the transpose of the variable (kernels)


def canonical_variables(model: keras.Model) -> dict[str, CanonicalSlot]:
    """Canonical name -> the model variable holding it (and whether it is stored transposed)."""
    standalone = isinstance(model, BertModel)
    encoder = model if standalone else model.bert
    prefix = "" if standalone else encoder.canonical_prefix
    by_path = {path: (prefix + name, transposed) for path, (name, transposed) in encoder.canonical_names().items()}
    slots = {}
    for variable in model.weights:
        # Paths are the checkpoint names (the encoder is named "bert") and head/kernel, head/bias.
        path = variable.path
        if path in by_path:
            name, transposed = by_path.pop(path)
            slots[name] = CanonicalSlot(variable, transposed)
            continue
        head, _, leaf = path.partition("/")
        if head + "." in getattr(model, "head_prefixes", ()) and leaf in ("kernel", "bias"):
            slots[f"{head}.{'weight' if leaf == 'kernel' else 'bias'}"] = CanonicalSlot(variable, leaf == "kernel")
            continue
        raise AssertionError(f"model variable {variable.path} has no canonical name")
    if by_path:
        raise AssertionError(f"model lacks variables {sorted(by_path)}")
    return slots


def canonical_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights as {canonical name: float32 array in the PyTorch layout} (what
    cnbert.torch models' state_dict() holds, and what save_pretrained writes)."""
    weights = {}
    for name, slot in canonical_variables(model).items():
        value = np.asarray(slot.variable.numpy(), dtype=np.float32)
        weights[name] = np.ascontiguousarray(value.T) if slot.transposed else value
    return weights


def load_canonical_weights(model: keras.Model, state: Mapping[str, np.ndarray], source: str = "weights",
                           allow_fresh_heads: bool = True) -> LoadReport:
    """Copy {canonical name: array} into `model` strictly (see cnbert.checkpoints.plan_load).
    allow_fresh_heads: task heads may be absent (pretrained encoders); False for fine-tuned models."""
    slots = canonical_variables(model)
    expected = {name: tuple(reversed(s.variable.shape)) if s.transposed else tuple(s.variable.shape)
                for name, s in slots.items()}
    head_prefixes = getattr(model, "head_prefixes", ()) if allow_fresh_heads else ()
    encoder = model if isinstance(model, BertModel) else model.bert
    plan = plan_load(expected, state, head_prefixes=head_prefixes, source=source,
                     model_prefix=encoder.canonical_prefix,
                     pretraining_head_prefixes=encoder.pretraining_head_prefixes)
    for name, value in plan.tensors.items():
        slot = slots[name]
        array = np.asarray(value, dtype=np.float32)
        slot.variable.assign(array.T if slot.transposed else array)
    return LoadReport.of(plan, source)


def read_canonical_weights(source) -> tuple[dict[str, np.ndarray], str]:
    """The weights at `source` (a model directory or weights file: safetensors, pytorch_model.bin,
    or a TF1 checkpoint of Google BERT, Google ALBERT, brightmart albert_zh or siBert) as {name:
    float32 numpy array}, with the path read. TF checkpoints come back under canonical names
    (convert_tf_variables); PyTorch pickles need torch (imported only then)."""
    weights = find_weights(source)
    path = str(weights.path)
    if weights.format == "safetensors":
        with reading_weights(path):
            state = load_file(path)
    elif weights.format == "pytorch":
        state = _read_torch_state_dict(path)
    else:
        converted = read_tf_weights(weights.path)
        return ConvertedTFWeights({name: np.asarray(value, dtype=np.float32) for name, value in converted.items()},
                                  converted.sources), path
    return {name: np.asarray(value, dtype=np.float32) for name, value in state.items()}, path


def _read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(path, "", "is a PyTorch pickle (pytorch_model.bin), which needs torch to read; "
                                        "install torch or convert it to model.safetensors") from None
    with reading_weights(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(path, "", "expected a flat state dict {name: tensor} (as save_pretrained writes)")
    return {name: tensor.detach().float().numpy() for name, tensor in state.items()}


def load_pretrained(model: keras.Model, source, vocab_file=None) -> LoadReport:
    """Load a pretrained checkpoint (Hugging Face directory; Google BERT, Google ALBERT, brightmart
    albert_zh or siBert TF1 directory; or a weights file)
    into `model` strictly; task heads absent from it stay freshly initialised and are reported.
    The vocabulary (`vocab_file`, else the model's vocab.txt when present: check_vocabulary) must have
    config.vocab_size entries."""
    source = Path(source)
    check_vocabulary(source, model.config, vocab_file)
    state, path = read_canonical_weights(source)
    report = load_canonical_weights(model, state, source=path, allow_fresh_heads=True)
    check_loaded_labels(report, getattr(model, "labels", None), source)
    return report


# The model class per (cnbert.tasks.TASK_HEADS head, ALBERT?), as in cnbert.torch.checkpoint.
_MODEL_CLASSES = {
    ("span", False): BertForSpanExtraction, ("cjrc", False): BertForCJRC,
    ("classification", False): BertForSequenceClassification, ("tagging", False): BertForTokenClassification,
    ("span", True): AlbertForSpanExtraction, ("cjrc", True): AlbertForCJRC,
    ("classification", True): AlbertForSequenceClassification, ("tagging", True): AlbertForTokenClassification,
}


def model_for_task(task: str, config: BertConfig) -> keras.Model:
    """A freshly initialised model for `task`: Bert* for a BertConfig, Albert* for an AlbertConfig
    (either layout); a classifier or tagger gets the task's labels."""
    head = TASK_HEADS.get(task)
    if head is None:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_HEADS)}")
    model_class = _MODEL_CLASSES[head, isinstance(config, AlbertConfig)]
    labels = output_labels(task)
    return model_class(config) if labels is None else model_class(config, labels)


def load_finetuned(directory, task: str, **config_overrides) -> keras.Model:
    """A task model (cnbert's directory, or transformers' BertForQuestionAnswering /
    AlbertForQuestionAnswering ... directory)
    with every weight, heads included, read from `directory`. config_overrides: e.g.
    hidden_dropout_prob=0.0 (the same keyword arguments as the PyTorch backend's)."""
    directory = Path(directory)
    model = model_for_task(task, read_pretrained_config(directory, **config_overrides))
    check_vocabulary(directory, model.config)
    state, path = read_canonical_weights(directory)
    report = load_canonical_weights(model, state, source=path, allow_fresh_heads=False)
    check_loaded_labels(report, getattr(model, "labels", None), directory)
    return model


def save_pretrained(model: keras.Model, directory, vocab_file) -> Path:
    """Write config.json, model.safetensors and vocab.txt as cnbert.torch.save_pretrained does, so
    the PyTorch model and transformers (Bert/AlbertForQuestionAnswering for a span model, ...) load
    it; the factorized ALBERT layout has no transformers class.
    Written into a temporary sibling directory and renamed into place (atomic)."""
    return write_model_directory(directory, model.config, getattr(model, "hf_architecture", "") or "BertModel",
                                 getattr(model, "labels", None), vocab_file,
                                 lambda path: save_file(canonical_weights(model), str(path), metadata={"format": "pt"}))
