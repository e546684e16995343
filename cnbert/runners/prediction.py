"""A runner's predict mode: the checks it starts with, the training run's settings taken from the
model directory (flags given on the command line win), and the fine-tuned model loaded for
prediction."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags

from cnbert.checkpoints import read_pretrained_config
from cnbert.config import ConfigError
from cnbert.data import mrc_postprocess
from cnbert.io_utils import replaced_together, write_json
from cnbert.runners.common import (FLAGS, backend, check_model_fits_task, check_output_dir, check_sequence_length,
                                   note, process_group, read_training_settings, require_file, training_config)
from cnbert.runners.run_dir import TEST_RESULTS_FILE
from cnbert.tasks import classification, ner
from cnbert.tokenization import ChineseBertTokenizer

# flag name -> the settings file predict mode took its value from (for errors about the value)
_FROM_SETTINGS: dict[str, str] = {}


def check_model_dir() -> None:
    if not FLAGS.model_dir:
        raise app.UsageError("--mode=predict needs --model_dir, a directory saved by cnbert")
    if not Path(FLAGS.model_dir).is_dir():
        raise app.UsageError(f"--model_dir={FLAGS.model_dir}: not a directory (expected a model saved by cnbert, "
                             "e.g. <output_dir>/seed_123/best_model)")


def start_prediction(single: bool, single_flags: str, writes: str, settings_file: str,
                     settings_names: Sequence[str]) -> None:
    """The checks every predict mode starts with: --model_dir, one example (`single`, from
    `single_flags`) or --predict_file (with --output_dir for the file it `writes`), then the
    training run's settings taken from the model directory (use_training_settings)."""
    check_model_dir()
    if single == bool(FLAGS.predict_file):
        raise app.UsageError(f"--mode=predict needs either --predict_file or {single_flags}")
    if FLAGS.predict_file:
        check_predict_file(writes)
    use_training_settings(Path(FLAGS.model_dir), settings_file, settings_names)


# Predict mode's scores, written with its predictions: what a labelled --predict_file scored (null
# for a file without labels), so that the folder never holds predictions beside other scores.
PREDICT_RESULTS_FILE = "predict_results.json"

# Every file a prediction set of any cnbert runner may hold (a training run's test/ is one such
# set). Predict mode replaces them all, so that its predictions never sit beside files of an
# earlier set: another task's predictions, or a training run's test_results.json.
PREDICTION_SET = (mrc_postprocess.PREDICTIONS_FILE, mrc_postprocess.NBEST_FILE, mrc_postprocess.CLASS_SCORES_FILE,
                  classification.PREDICTIONS_FILE, ner.PREDICTIONS_FILE, PREDICT_RESULTS_FILE, TEST_RESULTS_FILE)


def replaced_prediction_set():
    """replaced_together for --output_dir: what is written replaces the whole PREDICTION_SET there."""
    return replaced_together(FLAGS.output_dir, members=PREDICTION_SET)


def write_predictions(predictions, metrics: dict | None) -> Path:
    """Write predictions (an object with .write(directory) -> path) and PREDICT_RESULTS_FILE into
    --output_dir as one set (replaced_prediction_set); return the predictions file's path there."""
    with replaced_prediction_set() as staging:
        name = predictions.write(staging).name
        write_json(staging / PREDICT_RESULTS_FILE,
                   {"predict_file": FLAGS.predict_file, "model_dir": FLAGS.model_dir, "scores": metrics})
    return Path(FLAGS.output_dir) / name


def check_predict_file(writes: str) -> None:
    """--predict_file exists, and --output_dir is given for the file it `writes`."""
    require_file("predict_file")
    if not FLAGS.output_dir:
        raise app.UsageError(f"--predict_file needs --output_dir for {writes}")


@dataclasses.dataclass
class PredictionSetup:
    backend: Any
    ctx: Any  # process_group's: under torchrun or several TF workers, only ctx.is_main prints and writes
    model: Any
    tokenizer: ChineseBertTokenizer

    def trainer(self):
        """A Trainer that runs the model (prediction only), placed as the flags say."""
        return self.backend.Trainer(self.model, training_config(0), FLAGS.task, show_progress=False, ctx=self.ctx)


def load_for_prediction(min_token_types: int, what: str, check_flags: Callable[[], None] = lambda: None
                        ) -> PredictionSetup:
    """The fine-tuned model of --model_dir and its tokenizer, after the checks that need the model's
    config; check_flags runs the runner's own checks once the training settings are in the flags."""
    config = read_pretrained_config(FLAGS.model_dir)
    check_model_fits_task(config, FLAGS.model_dir, min_token_types, what)
    check_flags()
    if FLAGS.output_dir:
        check_output_dir(rank0=True)
    check_sequence_length(config, "; pass the --max_seq_length it was trained with")
    framework_backend = backend()
    ctx = process_group(framework_backend)
    overrides = {"attention": FLAGS.attention} if FLAGS.attention else {}
    model = framework_backend.load_finetuned(FLAGS.model_dir, FLAGS.task, **overrides)
    tokenizer = ChineseBertTokenizer(Path(FLAGS.model_dir) / "vocab.txt", do_lower_case=FLAGS.do_lower_case,
                                     fullwidth_to_halfwidth=bool(FLAGS.fullwidth_to_halfwidth))
    return PredictionSetup(framework_backend, ctx, model, tokenizer)


def value_origin(*names: str) -> str:
    """For an error about flag values: " (--x, --y from FILE beside --model_dir)" naming those of
    `names` that predict mode took from the model's training settings, not the command line; ""
    when none was."""
    taken = [name for name in names if name in _FROM_SETTINGS]
    if not taken:
        return ""
    files = sorted({_FROM_SETTINGS[name] for name in taken})
    return f" ({', '.join(f'--{name}' for name in taken)} from {', '.join(files)} beside --model_dir)"


def use_training_settings(model_dir: Path, settings_file: str, names: Sequence[str]) -> None:
    """Flags among `names` not given on the command line take the values the model was trained with
    (saved beside it by the training run, in `settings_file`, with the task when the runner saves it:
    a model is used for the task it was fine-tuned on). A model not trained by cnbert has none."""
    path = model_dir / settings_file
    if not path.is_file():
        return
    saved = read_training_settings(path)
    if saved.get("task", FLAGS.task) != FLAGS.task:
        # tasks with the same labels (LCQMC's and ChnSentiCorp's 0 / 1) cannot be told apart by them
        raise app.UsageError(f"--model_dir={FLAGS.model_dir} was fine-tuned on --task={saved['task']}, not "
                             f"--task={FLAGS.task}")
    taken = {name: saved[name] for name in names if name in saved and not FLAGS[name].present}
    for name, value in taken.items():
        # bool is an int in Python; a saved true must not pass for a window length, nor 1 for a bool.
        # The flag's parser says what it takes (its default may be None).
        if isinstance(FLAGS[name], flags.BooleanFlag):
            expected, ok = "true or false", type(value) is bool
        elif isinstance(FLAGS[name].parser, flags.IntegerParser):
            expected, ok = "an integer", type(value) is int
        else:
            expected, ok = "a finite number", type(value) in (int, float) and math.isfinite(value)
        if not ok:
            raise ConfigError(f"{path}: {name} must be {expected}, got {value!r}")
        setattr(FLAGS, name, value)
        _FROM_SETTINGS[name] = path.name
    if taken:
        note("as in training (" + path.name + "): " + ", ".join(f"--{k}={v}" for k, v in taken.items()))
