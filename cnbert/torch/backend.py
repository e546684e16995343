"""The PyTorch side of the task runners: build or load a model for a task, train it, save it.

cnbert.tf.backend offers the same functions, so a runner switches frameworks with one flag.
"""
from __future__ import annotations

import torch

from cnbert.config import BertConfig
from cnbert.tasks import HEAD_LABELS, TASK_HEADS, trims_padding
from cnbert.torch.checkpoint import load_for_task, load_pretrained, model_for_task, save_pretrained
from cnbert.torch.distributed import DistContext, any_process, barrier, check_device, finish, init_distributed
from cnbert.torch.heads import classification_loss, cjrc_loss, span_loss, token_classification_loss
from cnbert.torch.trainer import Trainer as _Trainer
from cnbert.torch.trainer import seed_everything
from cnbert.training import TrainingConfig

__all__ = ["create_model", "load_finetuned", "save_pretrained", "Trainer", "any_process", "barrier", "environment",
           "finish", "init_distributed", "seed_everything", "use_device"]


def use_device(device: str) -> None:
    """Check that `device` ("auto", "cpu", "cuda") can be used; init_distributed then places the
    process on it. Raises ValueError before any work when it cannot."""
    check_device(device)


def environment(ctx: DistContext) -> dict:
    """What trains the models: the framework and its version, this process's device, and the
    data-parallel replicas a global batch is split over (torchrun's processes)."""
    device = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "CPU"
    return {"framework": f"torch {torch.__version__}", "device": device, "replicas": ctx.world_size}


def create_model(task: str, config: BertConfig, init_checkpoint=None, vocab_file=None):
    """A fresh model for `task` (BERT or ALBERT, as `config` says), with `init_checkpoint`'s weights
    loaded strictly when given; returns (model, LoadReport or None)."""
    model = model_for_task(task, config)
    report = load_pretrained(model, init_checkpoint, vocab_file=vocab_file) if init_checkpoint else None
    return model, report


def load_finetuned(directory, task: str, **config_overrides):
    """A model fine-tuned by cnbert (its saved directory) for inference: every weight, the task
    heads included, must be in the directory."""
    model, _ = load_for_task(task, directory, allow_fresh_heads=False, **config_overrides)
    return model


_HEAD_LOSSES = {"span": span_loss, "cjrc": cjrc_loss, "classification": classification_loss,
                "tagging": token_classification_loss}


def _loss_for(task: str):
    """The task's per-feature loss of (outputs, batch), as the trainer needs it."""
    head = TASK_HEADS[task]
    loss, label_names = _HEAD_LOSSES[head], HEAD_LABELS[head]
    return lambda outputs, batch: loss(outputs, *(batch[name] for name in label_names), reduction="none")


def Trainer(model, config: TrainingConfig, task: str, ctx: DistContext | None = None, log_dir=None,
            show_progress: bool = True, trim_padding: bool | None = None) -> _Trainer:
    """The PyTorch Trainer with the task's loss. trim_padding (default: for classifiers and taggers,
    whose losses read no padding position): each micro-batch runs only as wide as its longest row."""
    return _Trainer(model, config, _loss_for(task), ctx=ctx, log_dir=log_dir, show_progress=show_progress,
                    trim_padding=trims_padding(task, trim_padding))
