"""What the task runners (cnbert-mrc, cnbert-classify, cnbert-ner) share: the flags every fine-tuning run takes
(model, training, output, framework), their checks, the model config, the process group, and the
command-line entry with its exit statuses. The multi-seed training run is in training_run, predict
mode's setup in prediction.

A runner defines its task flags (--task, --max_seq_length and the task's own), adopts these flags
as its own (`flags.adopt_module_key_flags(common)`), and calls the functions below. Only one
runner runs in a process: each defines --task on absl's global FLAGS.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags

from cnbert.checkpoints import check_vocab_size, find_weights, is_sibert_checkpoint, read_pretrained_config
from cnbert.command_line import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, print_usage_error
from cnbert.config import BertConfig, ConfigError, read_config
from cnbert.errors import DataError
from cnbert.io_utils import read_json_file
from cnbert.runners.run_dir import FLAGS_FILE
from cnbert.tokenization import bundled_vocab_path
from cnbert.training import LR_SCHEDULES, TrainingConfig

FLAGS = flags.FLAGS
log = logging.getLogger("cnbert.runners")

flags.DEFINE_enum("mode", "train", ["train", "predict"], "train: fine-tune and evaluate; predict: use a fine-tuned model.")
flags.DEFINE_enum("framework", "torch", ["torch", "tf"], "Deep-learning framework.")
flags.DEFINE_string("train_file", None, "Training data.")
flags.DEFINE_string("dev_file", None, "Development data, evaluated during training.")
flags.DEFINE_string("test_file", None, "Test data, scored once with the best dev model (--do_predict).")
flags.DEFINE_bool("do_predict", False, "After training, score --test_file with the best dev model.")
flags.DEFINE_string("init_checkpoint", None, "Pretrained model directory (Hugging Face, Google BERT / ALBERT, "
                    "brightmart albert_zh or siBert TF1 layout), or the prefix of one TF checkpoint in it.")
flags.DEFINE_string("bert_config_file", None, "Without --init_checkpoint: config of a RANDOMLY INITIALISED model "
                    "(for smoke tests and the demo only; scores are meaningless).")
flags.DEFINE_integer("init_seed", 0, "Seed of the random initialisation when there is no --init_checkpoint; every "
                     "training seed starts from these same weights.")
flags.DEFINE_string("vocab_file", None, "Vocabulary; default: the checkpoint's vocab.txt, else the bundled Chinese vocabulary.")
flags.DEFINE_bool("do_lower_case", True, "Lower-case and strip accents (true for all Chinese BERT checkpoints).")
flags.DEFINE_bool("fullwidth_to_halfwidth", None, "Map full-width forms (U+FF01..U+FF5E, U+3000) to half-width "
                  "before WordPiece, as siBert's tokenizer does. Default: on for a siBert checkpoint or a model cnbert "
                  "fine-tuned with it on (its cnbert_*_settings.json says so), else off.")
flags.DEFINE_string("output_dir", None, "Where results go; must be empty unless --overwrite_output_dir.")
flags.DEFINE_bool("overwrite_output_dir", False, "Allow a non-empty --output_dir.")
flags.DEFINE_bool("resume", False, "Continue the interrupted training run in --output_dir: keep the seeds it "
                  "finished, train the others again from the start, then write the report (and score --test_file) "
                  "anew. The run's flags must be those in its flags.txt; --seeds may add seeds.")
flags.DEFINE_float("learning_rate", 3e-5, "Peak learning rate.")
flags.DEFINE_float("num_train_epochs", 2.0, "Epochs (may be fractional).")
flags.DEFINE_integer("train_batch_size", 32, "Global batch per optimizer step (all processes and accumulation steps).")
flags.DEFINE_integer("eval_batch_size", 64, "Evaluation batch per process.")
flags.DEFINE_integer("gradient_accumulation_steps", 1, "Micro-steps per optimizer step.")
flags.DEFINE_float("warmup_proportion", 0.1, "Fraction of steps with linear warm-up.")
flags.DEFINE_enum("lr_schedule", "linear", list(LR_SCHEDULES), "After the warm-up: linear decay to 0 at the last step "
                  "(Google BERT, the original list) or constant (ERNIE's fine-tuning scripts).")
flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (not on biases and LayerNorm).")
flags.DEFINE_float("adam_epsilon", 1e-6, "AdamW epsilon.")
flags.DEFINE_float("max_grad_norm", 1.0, "Global gradient-norm clip (0: off).")
flags.DEFINE_bool("gradient_checkpointing", False, "Recompute each encoder layer in the backward pass: less "
                  "activation memory for long sequences, about a third more compute.")
flags.DEFINE_bool("group_by_length", False, "Batch training examples of similar length (sorted within runs of 50 "
                  "shuffled batches; the longest batch first): with PyTorch, classifiers and taggers then compute "
                  "less padding. Off: the original list's plain shuffle.")
flags.DEFINE_enum("precision", "fp32", ["fp32", "bf16", "fp16"], "Mixed precision (autocast; fp16 adds loss scaling).")
flags.DEFINE_float("eval_every", 0.0, "Evaluate every N optimizer steps (N >= 1) or every fraction of an epoch (0 < N < 1); "
                   "always at the end.")
flags.DEFINE_list("seeds", ["123"], "Training seeds; each is a full run from the same initial weights.")
flags.DEFINE_enum("attention", None, ["eager", "sdpa", "fused"], "Attention implementation (default: the config's); "
                  "fused uses cnbert's C++/CUDA kernels for the masked softmax and the FFN's bias + GELU.")
flags.DEFINE_float("hidden_dropout_prob", None, "Override the config's hidden dropout.")
flags.DEFINE_float("attention_probs_dropout_prob", None, "Override the config's attention dropout.")
flags.DEFINE_float("classifier_dropout", None, "Override the dropout before a classification head (sentence and "
                   "token classifiers, CJRC's answer class); default: BERT's hidden dropout, 0.1 for ALBERT.")
flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "torch: where to run.")
flags.DEFINE_enum("distribution_strategy", "one_device", ["one_device", "mirrored", "multi_worker_mirrored"],
                  "tf: tf.distribute strategy.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
# predict mode
flags.DEFINE_string("model_dir", None, "predict: a directory saved by cnbert (best_model).")
flags.DEFINE_string("predict_file", None, "predict: the file to run the model on (the task's format; labels not needed).")

SEED_LIMIT = 2**31
PATH_FLAGS = ("train_file", "dev_file", "test_file", "init_checkpoint", "bert_config_file", "vocab_file", "output_dir",
              "model_dir", "predict_file")
TRAIN_ONLY_FLAGS = ("train_file", "dev_file", "test_file", "do_predict", "init_checkpoint", "bert_config_file",
                    "init_seed", "vocab_file", "seeds", "resume", "learning_rate", "num_train_epochs", "train_batch_size",
                    "gradient_accumulation_steps", "warmup_proportion", "lr_schedule", "weight_decay", "adam_epsilon",
                    "max_grad_norm", "gradient_checkpointing", "group_by_length", "eval_every", "hidden_dropout_prob",
                    "attention_probs_dropout_prob", "classifier_dropout")
PREDICT_ONLY_FLAGS = ("model_dir", "predict_file")


def expand_paths():
    # Flag files name data as $CNBERT_DATA/...; expand environment variables and ~ once, up front.
    for name in PATH_FLAGS:
        value = getattr(FLAGS, name)
        if value:
            setattr(FLAGS, name, os.path.expanduser(os.path.expandvars(value)))


def require_file(name):
    path = getattr(FLAGS, name)
    if not path:
        raise app.UsageError(f"--{name} is required here")
    if not Path(path).is_file():
        raise app.UsageError(f"--{name}={path}: no such file")


def check_flag_combinations(train_only: Sequence[str] = (), predict_only: Sequence[str] = (),
                            single_prints: str = "") -> None:
    """Refuse flags this run would silently ignore: a user who passes them expects them to act.
    train_only / predict_only: the runner's own flags of one mode, beside the shared ones;
    predict_only are the flags that give predict mode one example in place of --predict_file, whose
    result is printed (`single_prints`: what is printed, e.g. "print the answer")."""
    ignored = (TRAIN_ONLY_FLAGS + tuple(train_only) if FLAGS.mode == "predict"
               else PREDICT_ONLY_FLAGS + tuple(predict_only))
    other = "train" if FLAGS.mode == "predict" else "predict"
    for name in ignored:
        if FLAGS[name].present:  # on the command line or in a flag file
            raise app.UsageError(f"--{name} applies to --mode={other}, and this run is --mode={FLAGS.mode}")
    if FLAGS.mode == "train":
        if FLAGS.test_file and not FLAGS.do_predict:
            raise app.UsageError("--test_file is scored only with --do_predict: pass --do_predict, or drop --test_file")
        if FLAGS.init_checkpoint and FLAGS.bert_config_file:
            raise app.UsageError("--init_checkpoint brings its own config; --bert_config_file is for a randomly "
                                 "initialised model: pass one of them")
    if FLAGS.mode == "predict" and any(getattr(FLAGS, name) is not None for name in predict_only):
        for name in ("output_dir", "overwrite_output_dir"):
            if FLAGS[name].present:
                raise app.UsageError(f"--{name} is for --predict_file; {'/'.join('--' + n for n in predict_only)} "
                                     f"{single_prints} and write nothing")
    if FLAGS.framework == "torch" and FLAGS.distribution_strategy != "one_device":
        raise app.UsageError("--distribution_strategy is for --framework=tf; with torch, start one process per GPU "
                             "with torchrun (see README)")
    if FLAGS.framework == "tf" and FLAGS["attention"].present:
        raise app.UsageError("--attention chooses among the PyTorch implementations; --framework=tf has one "
                             "(XLA-compiled) attention")


# ---- the model -------------------------------------------------------------------------------

def model_config(min_token_types: int, what: str) -> tuple[BertConfig, Path]:
    """The model config (with flag overrides) and the vocabulary file, validated together.
    min_token_types: the token types the task's inputs use; `what` says why (for the error)."""
    overrides = {k: getattr(FLAGS, k) for k in ("attention", "hidden_dropout_prob", "attention_probs_dropout_prob",
                                                "classifier_dropout")
                 if getattr(FLAGS, k) is not None}
    for name, value in overrides.items():
        if name != "attention" and not 0 <= value < 1:  # NaN too
            raise app.UsageError(f"--{name} must be a dropout rate in [0, 1), got {value}")
    if FLAGS.init_checkpoint:
        source = Path(FLAGS.init_checkpoint)
        directory = checkpoint_directory(source)
        config = read_pretrained_config(source, **overrides)  # BERT or ALBERT, any supported layout
        _default_fullwidth_to_halfwidth(lambda: _fullwidth_reason(source, directory))
        vocab = Path(FLAGS.vocab_file) if FLAGS.vocab_file else directory / "vocab.txt"
        if not vocab.is_file():
            raise app.UsageError(f"--init_checkpoint={source}: {directory} has no vocab.txt; pass --vocab_file")
    elif FLAGS.bert_config_file:
        config = read_config(FLAGS.bert_config_file).replace(**overrides)
        _default_fullwidth_to_halfwidth(lambda: None)
        vocab = Path(FLAGS.vocab_file) if FLAGS.vocab_file else bundled_vocab_path()
    else:
        raise app.UsageError("pass --init_checkpoint (a pretrained model) or --bert_config_file (random initialisation)")
    check_vocab_size(vocab, config)
    check_model_fits_task(config, str(FLAGS.init_checkpoint or FLAGS.bert_config_file), min_token_types, what)
    check_sequence_length(config)
    return config, vocab


def checkpoint_directory(source: Path) -> Path:
    """The model directory of --init_checkpoint: itself, or the directory of a TF checkpoint prefix
    (one of several checkpoints a pretraining run keeps beside its config and vocabulary)."""
    if source.is_dir():
        find_weights(source)
        return source
    if source.with_name(source.name + ".index").is_file():
        return source.parent
    raise app.UsageError(f"--init_checkpoint={source}: neither a model directory nor a TF checkpoint prefix "
                         "(PREFIX.index is missing)")


def _fullwidth_reason(source: Path, directory: Path) -> str | None:
    """Why the model at --init_checkpoint reads text with full-width forms mapped to half-width, or
    None: siBert was pretrained so (its tokenizer maps them first); a model cnbert fine-tuned with
    the map (from siBert, say) says so in its training settings. Without the same map, full-width
    letters, digits and punctuation would reach the model as other tokens, or [UNK]."""
    if is_sibert_checkpoint(source):
        return "siBert checkpoint: full-width characters are mapped to half-width before WordPiece, as siBert's " \
               "tokenizer does (--fullwidth_to_halfwidth)"
    for settings in sorted(directory.glob("cnbert_*_settings.json")):  # the runners' PREDICT_SETTINGS_FILEs
        if read_training_settings(settings).get("fullwidth_to_halfwidth") is True:
            return (f"--init_checkpoint was fine-tuned with full-width characters mapped to half-width "
                    f"({settings.name}): so is this run (--fullwidth_to_halfwidth)")
    return None


def _default_fullwidth_to_halfwidth(reason: Callable[[], str | None]) -> None:
    """--fullwidth_to_halfwidth, when not given: on, with a note saying why, when reason() gives one
    (asked only then: a flag given decides without reading the model's settings)."""
    if FLAGS.fullwidth_to_halfwidth is None:
        why = reason()
        FLAGS.fullwidth_to_halfwidth = why is not None
        if why:
            note(why)


def check_model_fits_task(config: BertConfig, source: str, min_token_types: int, what: str) -> None:
    if config.type_vocab_size < min_token_types:
        raise app.UsageError(f"{source}: type_vocab_size is {config.type_vocab_size}, but {what}")


def check_sequence_length(config: BertConfig, hint: str = "") -> None:
    if FLAGS.max_seq_length > config.max_position_embeddings:
        raise app.UsageError(f"--max_seq_length={FLAGS.max_seq_length} exceeds the model's max_position_embeddings="
                             f"{config.max_position_embeddings}{hint}")


def backend():
    """The framework's backend, with --device checked (and, for TensorFlow, applied) before the
    framework touches a device."""
    if FLAGS.framework == "tf":
        from cnbert.tf import backend as framework_backend
    else:
        from cnbert.torch import backend as framework_backend
    try:
        framework_backend.use_device(FLAGS.device)
    except ValueError as e:
        raise app.UsageError(f"--device={FLAGS.device}: {e}") from None
    return framework_backend


_OPEN_GROUPS: list[tuple[Any, Any]] = []  # (backend, process_group()) to finish when the runner succeeds
_PENDING_NOTES: list[str] = []  # note()s made before process_group() knew which process is the main one


def note(message: str) -> None:
    """Print `message` from the main process alone (under torchrun or several TF workers every
    process runs the runner): now if process_group() has been made, else as soon as it is (or
    from every process, should the run stop before: print_pending_notes)."""
    if not _OPEN_GROUPS:
        _PENDING_NOTES.append(message)
    elif _OPEN_GROUPS[-1][1].is_main:
        print(message, flush=True)


def print_pending_notes() -> None:
    """The notes of a run that stopped before its processes were known: each process prints them,
    as it prints the error that stopped it (a note may explain the error, e.g. a value it names
    was taken from the model's training settings)."""
    while _PENDING_NOTES:
        print(_PENDING_NOTES.pop(0), flush=True)


def process_group(backend_module):
    """The processes this run spans, with `.is_main` (the one that writes and prints) and
    `.world_size` (the workers a global batch is split over): torchrun's process group, or the TF
    strategy's replicas. The TF strategy is made here, before TensorFlow runs an op, as a
    multi-worker strategy must be. run_main finishes it: the processes exit together."""
    if FLAGS.framework == "torch":
        ctx = backend_module.init_distributed(FLAGS.device)
    else:
        ctx = backend_module.init_distributed(FLAGS.distribution_strategy)
    _OPEN_GROUPS.append((backend_module, ctx))
    while _PENDING_NOTES:
        note(_PENDING_NOTES.pop(0))
    return ctx


def close_process_groups() -> None:
    """Wait for every process, then let go of the process groups: the processes exit together."""
    while _OPEN_GROUPS:
        backend_module, ctx = _OPEN_GROUPS.pop()
        backend_module.finish(ctx)


# ---- training settings -----------------------------------------------------------------------

def training_config(seed: int) -> TrainingConfig:
    try:
        return TrainingConfig(
            learning_rate=FLAGS.learning_rate, num_train_epochs=FLAGS.num_train_epochs,
            train_batch_size=FLAGS.train_batch_size, eval_batch_size=FLAGS.eval_batch_size,
            gradient_accumulation_steps=FLAGS.gradient_accumulation_steps, warmup_proportion=FLAGS.warmup_proportion,
            lr_schedule=FLAGS.lr_schedule, weight_decay=FLAGS.weight_decay, adam_epsilon=FLAGS.adam_epsilon,
            max_grad_norm=FLAGS.max_grad_norm, precision=FLAGS.precision, seed=seed, eval_every=FLAGS.eval_every,
            gradient_checkpointing=FLAGS.gradient_checkpointing, group_by_length=FLAGS.group_by_length)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


# ---- output ----------------------------------------------------------------------------------

def check_output_dir(rank0: bool, any_process: Callable[[bool], bool] = bool) -> None:
    """--output_dir can be written, and is empty unless --overwrite_output_dir or --resume. Only rank 0 looks (the
    others could already see the flags.txt it goes on to write); any_process(flag) tells them all
    what it found, so that every process stops with the same error."""
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    if FLAGS.resume and FLAGS.overwrite_output_dir:
        raise app.UsageError("--resume keeps the earlier run's finished seeds and --overwrite_output_dir deletes "
                             "them: pass one of them (after a flag file that sets --overwrite_output_dir, add "
                             "--nooverwrite_output_dir)")
    out = Path(FLAGS.output_dir)
    check_writable_directory("output_dir", out)
    # another process's write check may be in the folder at this moment: it does not make it non-empty
    non_empty = out.exists() and any(not entry.name.startswith(_WRITE_CHECK_PREFIX) for entry in out.iterdir())
    if any_process(rank0 and non_empty and not (FLAGS.overwrite_output_dir or FLAGS.resume)):
        training_run_there = FLAGS.mode == "train" and (out / FLAGS_FILE).is_file()
        continue_it = " (or --resume to continue the training run there)" if training_run_there else ""
        raise app.UsageError(f"--output_dir={out} is not empty; pass --overwrite_output_dir to reuse it{continue_it}")


_WRITE_CHECK_PREFIX = ".cnbert-write-check-"


def check_writable_directory(name: str, path: Path) -> None:
    """A directory, or a path whose nearest existing ancestor is one (so it can be created), that
    can be written: an empty folder is made and removed there, so that a read-only or foreign
    folder stops the run now rather than after the model has loaded and the data is read."""
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, a file"
        raise app.UsageError(f"--{name}={path} {where}; it must be a directory")
    try:
        probe = tempfile.mkdtemp(prefix=_WRITE_CHECK_PREFIX, dir=existing)
    except OSError as e:
        where = "" if existing == path else f" (it would be made in {existing})"
        raise app.UsageError(f"--{name}={path} cannot be written{where}: {e.strerror or e}") from None
    os.rmdir(probe)


class TrainingStopped(RuntimeError):
    """A seed's training stopped (its loss stayed NaN/inf); the runner exits with status 1."""


def read_training_settings(path: Path) -> dict:
    """A settings file a training run saved beside its best model (a runner's PREDICT_SETTINGS_FILE)."""
    saved = read_json_file(path)
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: expected a JSON object of training settings, got {type(saved).__name__}")
    return saved


# ---- the command line ------------------------------------------------------------------------

def run_main(program: str, argv, body: Callable[[], None]) -> int:
    """Run `body` (the runner's checks and work) with the shared error handling and exit statuses."""
    try:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not FLAGS.task:
            raise app.UsageError("--task is required")
        expand_paths()
        body()
        close_process_groups()  # only when every process got here: one that failed alone would leave the others waiting
    except app.UsageError as e:
        # printed here rather than by absl, which under `python -m` or torchrun adds the module
        # docstring and every flag's help, burying the one line that matters
        print_pending_notes()
        print_usage_error(program, e)
        return EXIT_USAGE
    except TrainingStopped as e:
        # a seed whose training diverged, after the other seeds' outputs and report were written.
        # Every process stops here (the loss that stopped it is averaged over them), rank 0 last, as it
        # alone writes: the others wait for it, or torchrun would kill it mid-write when they exit.
        print(f"{program}: error: {e}", file=sys.stderr, flush=True)
        close_process_groups()
        return EXIT_FAILED
    except (DataError, ConfigError) as e:
        # bad input (a data file, a checkpoint, a config), the message naming the file and the record
        print_pending_notes()
        print(f"{program}: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{program}: interrupted; every output already written is complete (each set is replaced whole), "
              "and nothing half-written is left (a training run writes its report only at the end)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
