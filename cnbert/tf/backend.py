"""The TensorFlow side of the task runners: the same functions as cnbert.torch.backend (build or
load a model for a task, train it, save it), so a runner switches frameworks with one flag."""
from __future__ import annotations

import keras
import tensorflow as tf

from cnbert.config import BertConfig
from cnbert.tf import trainer
from cnbert.tf.checkpoint import LoadReport, load_finetuned, load_pretrained, model_for_task, save_pretrained
from cnbert.tf.distribute import StrategyContext, any_process, barrier, finish, init_distributed, use_device
from cnbert.tf.export import export_saved_model
from cnbert.training import FitResult, TrainingConfig

__all__ = ["create_model", "load_finetuned", "save_pretrained", "Trainer", "FitResult", "seed_everything",
           "export_saved_model", "use_device", "init_distributed", "any_process", "barrier", "environment", "finish"]


def environment(ctx: StrategyContext) -> dict:
    """What trains the models: the framework and its version, the device (the first GPU this
    process sees, or the CPU), and the replicas a global batch is split over (the strategy's)."""
    gpus = tf.config.get_visible_devices("GPU")
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"
    return {"framework": f"tensorflow {tf.__version__}", "device": device, "replicas": ctx.world_size}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow; fresh Keras weights then repeat exactly."""
    keras.utils.set_random_seed(seed)


def create_model(task: str, config: BertConfig, init_checkpoint=None, vocab_file=None
                 ) -> tuple[keras.Model, LoadReport | None]:
    """A fresh model for `task` ("cmrc2018", "drcd": span model; "cjrc": span + answer class; a
    classification task: pooled-[CLS] classifier over its labels), with
    `init_checkpoint`'s weights (a Hugging Face or Google TF1 directory, or a weights file) loaded
    strictly when given; returns (model, LoadReport or None)."""
    model = model_for_task(task, config)
    report = load_pretrained(model, init_checkpoint, vocab_file=vocab_file) if init_checkpoint else None
    return model, report


def Trainer(model, config: TrainingConfig, task: str, ctx: StrategyContext | None = None, log_dir=None,
            show_progress: bool = True, trim_padding: bool | None = None, **kwargs) -> trainer.Trainer:
    """cnbert.tf.trainer.Trainer on init_distributed's strategy (one_device without a ctx), taking
    the arguments of cnbert.torch.backend.Trainer; `kwargs` are the TF trainer's own (jit_compile)."""
    return trainer.Trainer(model, config, task, strategy_name=ctx.strategy_name if ctx else "one_device",
                           log_dir=log_dir, show_progress=show_progress, trim_padding=trim_padding, **kwargs)
