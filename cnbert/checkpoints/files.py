"""Finding the pieces of a pretrained model directory users bring.

Hugging Face: config.json + model.safetensors or pytorch_model.bin + vocab.txt.
Google TF1: bert_config.json + bert_model.ckpt.{index,data-*} + vocab.txt.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from cnbert.checkpoints.bert_layout import CheckpointError
from cnbert.checkpoints.google_tf import tf_checkpoint_prefix
from cnbert.config import BertConfig
from cnbert.tokenization import load_vocab

CONFIG_NAMES = ("config.json", "bert_config.json")
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
    """config.json (Hugging Face) or bert_config.json (Google) in `directory`."""
    directory = Path(directory)
    for name in CONFIG_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(directory, "", f"no model config: expected one of {', '.join(CONFIG_NAMES)}")


def read_pretrained_config(directory, **overrides) -> BertConfig:
    """The directory's config, with `overrides` (e.g. attention="eager", hidden_dropout_prob=0.0) applied."""
    return BertConfig.from_json_file(find_config(directory)).replace(**overrides)


def check_vocab_size(vocab_file, config: BertConfig) -> int:
    """Raise unless the vocabulary file has exactly config.vocab_size entries; return that count."""
    size = len(load_vocab(vocab_file))
    if size != config.vocab_size:
        raise CheckpointError(vocab_file, "", f"the vocabulary has {size} entries but the model config says "
                                              f"vocab_size={config.vocab_size}")
    return size
