"""The TensorFlow backend of the cnbert-mrc runner: the same five entry points as
cnbert.torch.backend, so the runner never imports a framework itself."""
from __future__ import annotations

from cnbert.checkpoints import check_vocab_size
from cnbert.config import BertConfig
from cnbert.tf.checkpoint import LoadReport, canonical_variables, load_finetuned, load_pretrained, save_pretrained
from cnbert.tf.export import export_saved_model
from cnbert.tf.heads import TASK_MODELS
from cnbert.tf.trainer import FitResult, Trainer

__all__ = ["create_model", "Trainer", "FitResult", "save_pretrained", "load_finetuned", "export_saved_model"]


def create_model(task: str, config: BertConfig, init_checkpoint: str | None, vocab_file=None):
    """(model, LoadReport) for `task` ("cmrc2018", "drcd": span model; "cjrc": span + answer
    class). init_checkpoint: a Hugging Face or Google TF1 directory (or weights file), loaded
    strictly; None gives a freshly initialised model whose report lists every weight as
    initialised (source ""). Fresh weights come from Keras's global seed
    (keras.utils.set_random_seed)."""
    model_class = TASK_MODELS.get(task)
    if model_class is None:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_MODELS)}")
    model = model_class(config)
    if init_checkpoint is None:
        if vocab_file is not None:
            check_vocab_size(vocab_file, config)
        return model, LoadReport(source="", loaded=[], initialised=sorted(canonical_variables(model)), ignored=[])
    return model, load_pretrained(model, init_checkpoint, vocab_file=vocab_file)
