"""Loading pretrained weights into cnbert's PyTorch models strictly, and saving Hugging Face
compatible model directories.

Sources: a Hugging Face directory (config.json + model.safetensors or pytorch_model.bin +
vocab.txt), a Google TF1 directory (bert_config.json + bert_model.ckpt.* + vocab.txt), or a
weights file. The matching rules (what is an error, what is ignored) live in cnbert.checkpoints.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cnbert.checkpoints import (
    CheckpointError,
    check_vocab_size,
    find_weights,
    google_to_hf,
    load_tf_checkpoint,
    plan_load,
    read_pretrained_config,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadReport:
    """source: the weights file read; loaded: model keys copied from it; initialised: model keys
    of task heads it lacked (left freshly initialised); ignored: its keys deliberately unused."""

    source: str
    loaded: list[str]
    initialised: list[str]
    ignored: list[str]


def read_state_dict(source) -> tuple[dict[str, torch.Tensor], str]:
    """The weights at `source` (directory or file) as a flat {name: tensor} dict on CPU, with the
    path read. TF checkpoints come back under Hugging Face BertModel names (see google_to_hf)."""
    weights = find_weights(source)
    path = str(weights.path)
    if weights.format == "safetensors":
        return load_file(path, device="cpu"), path
    if weights.format == "pytorch":
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(path, "", "expected a flat state dict {name: tensor} (as save_pretrained writes)")
        return state, path
    conversion = google_to_hf(load_tf_checkpoint(weights.path), source=path)
    if conversion.skipped:
        logger.info("%s: skipped %d TF variables (optimizer slots, global_step, cls/* heads)",
                    path, len(conversion.skipped))
    return {name: torch.from_numpy(array) for name, array in conversion.weights.items()}, path


def load_pretrained(model: torch.nn.Module, source, vocab_file=None) -> LoadReport:
    """Copy pretrained weights into `model` (BertModel, BertForSpanExtraction, BertForCJRC) strictly.

    Missing encoder weights, unexpected keys (other than the pretraining heads cls.predictions.* /
    cls.seq_relationship.*, and the pooler when the model has none) and shape mismatches raise
    CheckpointError naming them. Task heads named by `model.head_prefixes` may be absent: they keep
    their fresh initialisation and are listed in the report. The vocabulary (`vocab_file`, else
    vocab.txt in a source directory when present) must have config.vocab_size entries.
    """
    source = Path(source)
    if vocab_file is None and source.is_dir() and (source / "vocab.txt").is_file():
        vocab_file = source / "vocab.txt"
    if vocab_file is not None:
        check_vocab_size(vocab_file, model.config)
    state, path = read_state_dict(source)
    model_state = model.state_dict()
    plan = plan_load({name: tuple(t.shape) for name, t in model_state.items()}, state,
                     head_prefixes=getattr(model, "head_prefixes", ()), source=path)
    with torch.no_grad():
        for name, value in plan.tensors.items():
            model_state[name].copy_(value)  # state_dict tensors share storage with the parameters
    report = LoadReport(source=path, loaded=sorted(plan.tensors), initialised=plan.initialised,
                        ignored=sorted(plan.ignored))
    logger.info("%s: loaded %d tensors; ignored %s", path, len(report.loaded), report.ignored or "nothing")
    if report.initialised:
        logger.warning("%s: freshly initialised (not in the checkpoint): %s", path, report.initialised)
    return report


def from_pretrained(model_class, directory, vocab_file=None, **config_overrides):
    """Build `model_class` from the directory's config (config.json or bert_config.json, with
    overrides such as attention="eager") and load its weights; returns (model, LoadReport)."""
    config = read_pretrained_config(directory, **config_overrides)
    model = model_class(config)
    return model, load_pretrained(model, directory, vocab_file=vocab_file)


def save_pretrained(model: torch.nn.Module, directory, tokenizer_vocab) -> Path:
    """Write config.json, model.safetensors and vocab.txt to `directory` so that cnbert and
    transformers (`BertForQuestionAnswering.from_pretrained` for a span model) load it.

    Written into a temporary sibling directory and renamed into place, so a reader never sees a
    partial model; an existing directory is replaced (after the new one is complete).
    """
    directory = Path(directory)
    check_vocab_size(tokenizer_vocab, model.config)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        architecture = getattr(model, "hf_architecture", "BertModel")
        model.config.to_json_file(staging / "config.json", architectures=[architecture])
        state = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        shutil.copyfile(tokenizer_vocab, staging / "vocab.txt")
        _replace_directory(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _replace_directory(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old)
