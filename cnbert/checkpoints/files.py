"""Finding the pieces of a pretrained model directory users bring.

Hugging Face: config.json + model.safetensors or pytorch_model.bin + vocab.txt.
Google TF1: bert_config.json + bert_model.ckpt.{index,data-*} + vocab.txt.
Google ALBERT / brightmart albert_zh TF1: albert_config.json or albert_config_{base,large,...}.json
+ one checkpoint (albert_model.ckpt.*, model.ckpt-best.*) + vocab.txt.
siBert TF1: setting.txt (its pretraining arguments) + one checkpoint (model.ckpt-N.*) + vocab.txt.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from cnbert.checkpoints.bert_layout import CheckpointError
from cnbert.checkpoints.google_tf import list_tf_variables, tf_checkpoint_prefix
from cnbert.checkpoints.tf_layouts import ALBERT_TF_LAYOUTS, detect_tf_layout
from cnbert.config import (SIBERT_ACTIVATION, SIBERT_LAYER_NORM_EPS, SIBERT_SETTINGS_FILE, AlbertConfig, BertConfig,
                           config_class_for, config_from_dict, read_config_dict, saved_label_names)
from cnbert.tokenization import load_vocab

CONFIG_NAMES = ("config.json", "bert_config.json", SIBERT_SETTINGS_FILE)
ALBERT_CONFIG_PATTERN = "albert_config*.json"
WEIGHT_FORMATS = {"model.safetensors": "safetensors", "pytorch_model.bin": "pytorch"}


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """`format` is "safetensors", "pytorch" (a torch.save'd state dict) or "tf" (path = checkpoint prefix)."""

    path: Path
    format: str


def find_weights(source) -> WeightsFile:
    """The weights in a model directory (model.safetensors, else pytorch_model.bin, else one TF
    checkpoint), or the format of a weights file given directly."""
    source = Path(source)
    if source.is_dir():
        for name, fmt in WEIGHT_FORMATS.items():
            if (source / name).is_file():
                return WeightsFile(source / name, fmt)
        sharded = sorted(p.name for p in source.glob("*.index.json"))
        if sharded:
            raise CheckpointError(source, "", f"sharded checkpoints ({', '.join(sharded)}) are not supported")
        if any(source.glob("*.index")):
            return WeightsFile(tf_checkpoint_prefix(source), "tf")
        raise CheckpointError(source, "", "no weights found: expected model.safetensors, pytorch_model.bin "
                                          "or a TF checkpoint (*.index + *.data-*)")
    if source.suffix == ".safetensors" and source.is_file():
        return WeightsFile(source, "safetensors")
    if source.suffix in (".bin", ".pt", ".pth") and source.is_file():
        return WeightsFile(source, "pytorch")
    if source.suffix == ".index" or source.with_name(source.name + ".index").is_file():
        return WeightsFile(tf_checkpoint_prefix(source), "tf")
    raise CheckpointError(source, "", "not found, or not a weights file (.safetensors, .bin, or a TF "
                                      "checkpoint prefix)")


def find_config(directory) -> Path:
    """config.json (Hugging Face), bert_config.json (Google), setting.txt (siBert) or a single
    albert_config*.json (Google ALBERT, brightmart albert_zh) in `directory`, the first found in that
    order."""
    directory = Path(directory)
    for name in CONFIG_NAMES:
        if (directory / name).is_file():
            return directory / name
    albert = sorted(p for p in directory.glob(ALBERT_CONFIG_PATTERN) if p.is_file())
    if len(albert) > 1:
        raise CheckpointError(directory, "", f"several model configs {[p.name for p in albert]}: keep the one "
                                             "that belongs to the checkpoint")
    if albert:
        return albert[0]
    raise CheckpointError(directory, "", f"no model config: expected one of {', '.join(CONFIG_NAMES)} "
                                         f"or {ALBERT_CONFIG_PATTERN}")


def read_pretrained_config(source, **overrides) -> BertConfig:
    """The config of the model at `source`, a BertConfig or an AlbertConfig, with `overrides` (e.g.
    attention="eager", hidden_dropout_prob=0.0) applied. `source` is a model directory, or the prefix
    of one TF checkpoint in it (for a directory that keeps several, as siBert's pretraining does):
    the config is the directory's.

    Google ALBERT and brightmart albert_zh configs name no model_type and have the same keys; their
    layouts differ in the checkpoint's variable names, so an ALBERT config without model_type or
    embedding_layout takes its layout from the TF checkpoint.
    """
    source = Path(source)
    weights = find_weights(source)
    path = find_config(source if source.is_dir() else weights.path.parent)
    values = read_config_dict(path)
    if config_class_for(values) is AlbertConfig and "model_type" not in values and "embedding_layout" not in values:
        values = {**values, "embedding_layout": _albert_layout_of_checkpoint(weights, path)}
    config = config_from_dict(values, source=str(path))
    _check_sibert_pairing(weights, path, config)
    return config.replace(**overrides)


def check_classifier_labels(source, labels) -> None:
    """A classifier loaded from the model at `source` must have been trained on `labels`, in that
    order: when the config beside it names its labels (id2label), they must be the same, or every
    prediction would be read as another class with no error anywhere (XNLI's three labels come in
    several orders). A config without names (or with transformers' LABEL_0, ...) cannot be checked."""
    source = Path(source)
    directory = source if source.is_dir() else find_weights(source).path.parent
    try:
        path = find_config(directory)
    except CheckpointError:
        return  # a bare weights file: no config to compare with
    if path.suffix != ".json":
        return
    saved = saved_label_names(read_config_dict(path), source=str(path))
    if saved is not None and saved != tuple(labels):
        raise CheckpointError(path, "", f"its classifier was trained on the labels {list(saved)} (id2label, in "
                                        f"output order), but this task's labels are {list(labels)}")


def _check_sibert_pairing(weights: WeightsFile, config_path: Path, config: BertConfig) -> None:
    """A siBert checkpoint needs siBert's activation and LayerNorm epsilon, and setting.txt siBert
    weights: either mismatch would load every weight and compute something else."""
    from_settings = config_path.name == SIBERT_SETTINGS_FILE
    sibert_weights = _holds_sibert(weights)
    if from_settings and not sibert_weights:
        raise CheckpointError(config_path, "", f"siBert settings, but {weights.path.name} is not a siBert "
                                               "checkpoint (no bert_model/ variables)")
    sibert_numerics = (config.hidden_act, config.layer_norm_eps) == (SIBERT_ACTIVATION, SIBERT_LAYER_NORM_EPS)
    if sibert_weights and not sibert_numerics:
        raise CheckpointError(config_path, "", f"{weights.path.name} is a siBert checkpoint, which computes "
                                               f"hidden_act {SIBERT_ACTIVATION!r} (blocksparse fast_gelu) with "
                                               f"layer_norm_eps {SIBERT_LAYER_NORM_EPS}, but this config says "
                                               f"{config.hidden_act!r} and {config.layer_norm_eps}: use siBert's "
                                               f"{SIBERT_SETTINGS_FILE} as the config")


def is_sibert_checkpoint(source) -> bool:
    """Whether the weights at `source` (a model directory or weights file) are a siBert TF checkpoint,
    whose tokenizer maps full-width characters to half-width (cnbert.tokenization)."""
    return _holds_sibert(find_weights(source))


def _holds_sibert(weights: WeightsFile) -> bool:
    return weights.format == "tf" and detect_tf_layout(list_tf_variables(weights.path)) == "sibert"


def _albert_layout_of_checkpoint(weights: WeightsFile, config_path: Path) -> str:
    if weights.format != "tf":
        raise CheckpointError(config_path, "", "an ALBERT config without model_type or embedding_layout beside "
                                               f"{weights.path.name}: add \"embedding_layout\" (\"albert\" or "
                                               "\"factorized_word\") to say which layout the weights are in")
    layout = detect_tf_layout(list_tf_variables(weights.path))
    if layout not in ALBERT_TF_LAYOUTS:
        raise CheckpointError(weights.path, "", f"{config_path.name} describes an ALBERT model (it has "
                                                f"embedding_size) but the checkpoint holds {layout} variables")
    return layout


def check_vocabulary(source, config: BertConfig, vocab_file=None) -> None:
    """`vocab_file`, else the model's vocab.txt when there is one (in the directory `source`, or
    beside the weights file or TF checkpoint prefix `source` names), has config.vocab_size entries."""
    if vocab_file is None:
        source = Path(source)
        beside = (source if source.is_dir() else find_weights(source).path.parent) / "vocab.txt"
        vocab_file = beside if beside.is_file() else None
    if vocab_file is not None:
        check_vocab_size(vocab_file, config)


def check_vocab_size(vocab_file, config: BertConfig) -> int:
    """Raise unless the vocabulary file has exactly config.vocab_size entries; return that count."""
    size = len(load_vocab(vocab_file))
    if size != config.vocab_size:
        raise CheckpointError(vocab_file, "", f"the vocabulary has {size} entries but the model config says "
                                              f"vocab_size={config.vocab_size}")
    return size
