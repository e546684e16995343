"""What both frameworks' loaders and savers share: a TF1 checkpoint's weights under model names, the
classifier-labels check after a load, and the model directory cnbert saves (config.json +
model.safetensors + vocab.txt, which transformers loads too)."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from cnbert.checkpoints.bert_layout import ConvertedTFWeights, LoadReport
from cnbert.checkpoints.files import check_classifier_labels, check_vocab_size
from cnbert.checkpoints.google_tf import load_tf_checkpoint
from cnbert.checkpoints.tf_layouts import convert_tf_variables
from cnbert.config import BertConfig
from cnbert.io_utils import atomic_directory

logger = logging.getLogger(__name__)


def read_tf_weights(prefix) -> ConvertedTFWeights:
    """The weights of the TF1 checkpoint at `prefix` under model names (convert_tf_variables: the
    layout is read from the variable names), as numpy arrays in their stored dtype."""
    path = str(prefix)
    conversion, layout = convert_tf_variables(load_tf_checkpoint(prefix), source=path)
    logger.info("%s: a TF checkpoint in the %s layout", path, layout)
    if conversion.skipped:
        logger.info("%s: skipped %d TF variables (optimizer slots, global_step, pretraining heads)",
                    path, len(conversion.skipped))
    return conversion.weights


def check_loaded_labels(report: LoadReport, labels: Sequence[str] | None, source) -> None:
    """A classifier whose head was read from `source` (not left freshly initialised) must have been
    trained on the model's labels, in order (check_classifier_labels)."""
    if labels is not None and not any(name.startswith("classifier.") for name in report.initialised):
        check_classifier_labels(source, labels)


def write_model_directory(directory, config: BertConfig, architecture: str, labels: Sequence[str] | None,
                          vocab_file, write_weights: Callable[[Path], None]) -> Path:
    """Write config.json (naming `architecture`, and a classifier's labels), the weights
    (`write_weights(path of model.safetensors)`) and vocab.txt into a temporary sibling of
    `directory`, renamed into place once complete: a reader never sees a partial model, and an
    existing directory is replaced only by a whole new one."""
    directory = Path(directory)
    check_vocab_size(vocab_file, config)
    with atomic_directory(directory) as staging:
        config.to_json_file(staging / "config.json", architectures=[architecture], labels=labels)
        write_weights(staging / "model.safetensors")
        shutil.copyfile(vocab_file, staging / "vocab.txt")
    return directory
