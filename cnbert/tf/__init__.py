"""TensorFlow 2 / Keras 3 BERT and ALBERT for cnbert: the same encoders, heads, losses, weight
layouts and training semantics as cnbert.torch, with variables named like Google's TF checkpoints.

Importing this package imports TensorFlow and Keras, so framework-neutral code never imports it;
a missing or unsuitable installation fails here with one message saying what to install.
"""
import os

REQUIRED_TENSORFLOW = (2, 16)  # the first release whose tf.keras is Keras 3
REQUIRED_KERAS = (3, 0)
_INSTALL_ADVICE = ("install cnbert's tf-cpu extra, or tf-gpu for NVIDIA GPUs (pyproject.toml pins the versions; "
                   "in a clone: `make install`, or `pip install --no-build-isolation -e '.[tf-cpu]'`), "
                   "or use --framework=torch")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def _check_installation() -> None:
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(f"cnbert's TensorFlow path needs TensorFlow >= 2.16, which cannot be imported ({e}); "
                          f"{_INSTALL_ADVICE}") from e
    if _version(tf.__version__) < REQUIRED_TENSORFLOW:
        raise ImportError(f"cnbert's TensorFlow path needs TensorFlow >= 2.16 (Keras 3), found {tf.__version__}; "
                          f"{_INSTALL_ADVICE}")
    # Keras 3 picks its backend once, at first import, from KERAS_BACKEND; this package is TensorFlow code.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras
    except ImportError as e:
        raise ImportError(f"cnbert's TensorFlow path needs Keras 3, which cannot be imported ({e}); "
                          f"{_INSTALL_ADVICE}") from e
    if _version(keras.__version__) < REQUIRED_KERAS:
        raise ImportError(f"cnbert's TensorFlow path needs Keras 3, found Keras {keras.__version__}; {_INSTALL_ADVICE}")
    if keras.backend.backend() != "tensorflow":
        raise ImportError(f"Keras was started with the {keras.backend.backend()!r} backend (KERAS_BACKEND="
                          f"{os.environ.get('KERAS_BACKEND')!r}); cnbert's TensorFlow path needs "
                          "KERAS_BACKEND=tensorflow, set before anything imports keras")


_check_installation()

from cnbert.tf.checkpoint import (  # noqa: E402  (after the installation check, deliberately)
    LoadReport,
    canonical_variables,
    canonical_weights,
    load_canonical_weights,
    load_finetuned,
    load_pretrained,
    read_canonical_weights,
    save_pretrained,
)
from cnbert.tf.albert import (  # noqa: E402
    AlbertForCJRC,
    AlbertForSequenceClassification,
    AlbertForSpanExtraction,
    AlbertForTokenClassification,
    AlbertModel,
)
from cnbert.tf.export import export_saved_model  # noqa: E402
from cnbert.tf.heads import (  # noqa: E402
    ANSWER_CLASSES,
    IGNORE_INDEX,
    BertForCJRC,
    BertForSequenceClassification,
    BertForSpanExtraction,
    BertForTokenClassification,
    classification_loss,
    cjrc_loss,
    span_loss,
    token_classification_loss,
)
from cnbert.tf.modeling import BertModel, set_precision  # noqa: E402
from cnbert.tf.trainer import Trainer  # noqa: E402
from cnbert.training import FitResult, NonFiniteLossError  # noqa: E402

__all__ = [
    "LoadReport", "canonical_variables", "canonical_weights", "load_canonical_weights", "load_finetuned",
    "load_pretrained", "read_canonical_weights", "save_pretrained", "export_saved_model", "ANSWER_CLASSES", "IGNORE_INDEX",
    "BertForCJRC", "BertForSequenceClassification", "BertForSpanExtraction", "BertForTokenClassification",
    "classification_loss", "cjrc_loss", "span_loss", "token_classification_loss", "BertModel", "set_precision",
    "FitResult", "NonFiniteLossError", "Trainer", "AlbertForCJRC", "AlbertForSequenceClassification",
    "AlbertForSpanExtraction", "AlbertForTokenClassification", "AlbertModel",
]
