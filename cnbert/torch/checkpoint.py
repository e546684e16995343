"""Building task models (BERT or ALBERT, from the config), loading pretrained weights into them
strictly, and saving Hugging Face compatible model directories.

Sources: a Hugging Face directory (config.json + model.safetensors or pytorch_model.bin +
vocab.txt), a Google TF1 directory (bert_config.json + bert_model.ckpt.* + vocab.txt), a Google
ALBERT or brightmart albert_zh TF1 directory (albert_config*.json + one checkpoint + vocab.txt), a
siBert TF1 directory (setting.txt + one checkpoint + vocab.txt), or a weights file. The matching rules (what is an error, what is ignored) live in cnbert.checkpoints.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cnbert.checkpoints import (
    LoadReport,
    ENCODER_PREFIX,
    PRETRAINING_HEAD_PREFIXES,
    CheckpointError,
    ConvertedTFWeights,
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
from cnbert.torch.albert import (AlbertForCJRC, AlbertForSequenceClassification, AlbertForSpanExtraction,
                                 AlbertForTokenClassification)
from cnbert.torch.heads import (BertForCJRC, BertForSequenceClassification, BertForSpanExtraction,
                                BertForTokenClassification)


def read_state_dict(source) -> tuple[dict[str, torch.Tensor], str]:
    """The weights at `source` (directory or file) as a flat {name: tensor} dict on CPU, with the
    path read. TF checkpoints come back under cnbert's model names for the layout their variable
    names show (Hugging Face BertModel / AlbertModel names, or cnbert's factorized ALBERT ones)."""
    weights = find_weights(source)
    path = str(weights.path)
    if weights.format == "safetensors":
        with reading_weights(path):
            return load_file(path, device="cpu"), path
    if weights.format == "pytorch":
        with reading_weights(path):
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(path, "", "expected a flat state dict {name: tensor} (as save_pretrained writes)")
        return state, path
    converted = read_tf_weights(weights.path)
    # torch.from_numpy cannot take ml_dtypes' bfloat16 (a TF checkpoint saved in bf16): widen it,
    # losslessly, to float32
    return ConvertedTFWeights({name: torch.from_numpy(array.astype("float32") if array.dtype.name == "bfloat16"
                                                      else array) for name, array in converted.items()},
                              converted.sources), path


def load_pretrained(model: torch.nn.Module, source, vocab_file=None, allow_fresh_heads: bool = True) -> LoadReport:
    """Copy pretrained weights into `model` (BertModel, AlbertModel or a task model of either) strictly.

    Missing encoder weights, unexpected keys (other than the pretraining heads, cls.predictions.* /
    cls.seq_relationship.* for BERT and predictions.* / sop_classifier.* for ALBERT, and the pooler
    when the model has none) and shape mismatches raise CheckpointError naming them. Task heads
    named by `model.head_prefixes` may be absent: they keep their fresh initialisation and are
    listed in the report, unless `allow_fresh_heads` is False (a fine-tuned model must have them).
    The vocabulary (`vocab_file`, else the model's vocab.txt when present: check_vocabulary) must have
    config.vocab_size entries.
    """
    source = Path(source)
    check_vocabulary(source, model.config, vocab_file)
    state, path = read_state_dict(source)
    model_state = model.state_dict()
    plan = plan_load({name: tuple(t.shape) for name, t in model_state.items()}, state,
                     head_prefixes=getattr(model, "head_prefixes", ()) if allow_fresh_heads else (), source=path,
                     model_prefix=getattr(model, "base_model_prefix", ENCODER_PREFIX.rstrip(".")) + ".",
                     pretraining_head_prefixes=getattr(model, "pretraining_head_prefixes", PRETRAINING_HEAD_PREFIXES))
    report = LoadReport.of(plan, path)
    check_loaded_labels(report, getattr(model, "labels", None), source)
    with torch.no_grad():
        for name, value in plan.tensors.items():
            model_state[name].copy_(value)  # state_dict tensors share storage with the parameters
    return report


def from_pretrained(model_class, directory, vocab_file=None, **config_overrides):
    """Build `model_class` from the directory's config (config.json, bert_config.json, setting.txt or
    albert_config*.json, with overrides such as attention="eager") and load its weights; returns
    (model, LoadReport). `directory` may also be the prefix of one TF checkpoint in a model directory.
    load_for_task picks the class from the config instead."""
    config = read_pretrained_config(directory, **config_overrides)
    model = model_class(config)
    return model, load_pretrained(model, directory, vocab_file=vocab_file)


# The model class per (cnbert.tasks.TASK_HEADS head, ALBERT?).
_MODEL_CLASSES = {
    ("span", False): BertForSpanExtraction, ("cjrc", False): BertForCJRC,
    ("classification", False): BertForSequenceClassification, ("tagging", False): BertForTokenClassification,
    ("span", True): AlbertForSpanExtraction, ("cjrc", True): AlbertForCJRC,
    ("classification", True): AlbertForSequenceClassification, ("tagging", True): AlbertForTokenClassification,
}


def model_class_for_task(task: str, config: BertConfig) -> type:
    """The task model class for `task` (a TASK_HEADS name, or the head "span") and the config's
    model: Bert* for a BertConfig, Albert* for an AlbertConfig."""
    head = "span" if task == "span" else TASK_HEADS.get(task)
    if head is None:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(sorted(TASK_HEADS))} or 'span'")
    return _MODEL_CLASSES[head, isinstance(config, AlbertConfig)]


def model_for_task(task: str, config: BertConfig) -> torch.nn.Module:
    """A freshly initialised model for `task` (see model_class_for_task); a classifier or tagger gets
    the task's labels."""
    model_class = model_class_for_task(task, config)
    labels = output_labels(task)
    return model_class(config) if labels is None else model_class(config, labels)


def load_for_task(task: str, directory, vocab_file=None, allow_fresh_heads: bool = True, **config_overrides):
    """The model for `task` that the directory's config describes (BERT or ALBERT, any layout), with
    its weights loaded strictly (task heads included unless `allow_fresh_heads`); returns
    (model, LoadReport)."""
    config = read_pretrained_config(directory, **config_overrides)
    model = model_for_task(task, config)
    return model, load_pretrained(model, directory, vocab_file=vocab_file, allow_fresh_heads=allow_fresh_heads)


def save_pretrained(model: torch.nn.Module, directory, tokenizer_vocab) -> Path:
    """Write config.json, model.safetensors and vocab.txt to `directory` so that cnbert and
    transformers (`BertForQuestionAnswering` / `AlbertForQuestionAnswering.from_pretrained` for a
    span model, `BertForSequenceClassification` for a classifier, with its labels) load it. The factorized ALBERT layout has no transformers class: its config's
    model_type makes transformers refuse the directory rather than load it wrongly.

    Written into a temporary sibling directory and renamed into place, so a reader never sees a
    partial model; an existing directory is replaced (after the new one is complete).
    """
    def write_weights(path):
        state = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
        save_file(state, str(path), metadata={"format": "pt"})

    return write_model_directory(directory, model.config, getattr(model, "hf_architecture", "BertModel"),
                                 getattr(model, "labels", None), tokenizer_vocab, write_weights)
