"""`cnbert-mrc`: fine-tune and evaluate on CMRC 2018, DRCD or CJRC, or answer questions with a
fine-tuned model.

    cnbert-mrc --flagfile=flags/cmrc2018_roberta_wwm_ext_base.flags --init_checkpoint=/path/to/model
    torchrun --nproc_per_node=8 -m cnbert.runners.mrc --flagfile=...      # several GPUs / nodes
    cnbert-mrc --mode=predict --task=cmrc2018 --model_dir=runs/x/seed_123/best_model \
        --question=... --context=...

Training mode runs every seed in --seeds from the same initial weights, keeps each seed's best
dev evaluation (by F1 + EM), and writes report.md / report.json with `mean (max)` over seeds.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

from absl import app, flags

from cnbert.checkpoints import check_vocab_size, find_weights, is_sibert_checkpoint, read_pretrained_config
from cnbert.config import AlbertConfig, BertConfig, ConfigError, read_config
from cnbert.data import FeatureConfig, MrcExample, build_features, postprocess_predictions
from cnbert.errors import DataError
from cnbert.io_utils import read_json_file, replaced_together, write_json, write_text
from cnbert.report import format_markdown, summarize_seeds
from cnbert.tasks import mrc as tasks
from cnbert.tokenization import ChineseBertTokenizer, bundled_vocab_path
from cnbert.training import NonFiniteLossError, TrainingConfig

FLAGS = flags.FLAGS
log = logging.getLogger("cnbert.mrc")

flags.DEFINE_enum("mode", "train", ["train", "predict"], "train: fine-tune and evaluate; predict: answer with a fine-tuned model.")
flags.DEFINE_enum("task", None, sorted(tasks.TASKS), "Reading-comprehension task.")
flags.DEFINE_enum("framework", "torch", ["torch", "tf"], "Deep-learning framework.")
flags.DEFINE_string("train_file", None, "Training data (SQuAD-style JSON; for cjrc the CAIL2019 file).")
flags.DEFINE_string("dev_file", None, "Development data, evaluated during training.")
flags.DEFINE_string("test_file", None, "Test data, scored once with the best dev model (--do_predict).")
flags.DEFINE_bool("do_predict", False, "After training, answer --test_file with the best dev model.")
flags.DEFINE_float("cjrc_dev_fraction", None, "cjrc only: train on the passages of --train_file not held out and "
                   "evaluate on this fraction of its passages (the original list used 0.1); --dev_file must then be "
                   "the same file.")
flags.DEFINE_string("init_checkpoint", None, "Pretrained model directory (Hugging Face, Google BERT / ALBERT, "
                    "brightmart albert_zh or siBert TF1 layout), or the prefix of one TF checkpoint in it.")
flags.DEFINE_string("bert_config_file", None, "Without --init_checkpoint: config of a RANDOMLY INITIALISED model "
                    "(for smoke tests and the demo only; scores are meaningless).")
flags.DEFINE_integer("init_seed", 0, "Seed of the random initialisation when there is no --init_checkpoint; every "
                     "training seed starts from these same weights.")
flags.DEFINE_string("vocab_file", None, "Vocabulary; default: the checkpoint's vocab.txt, else the bundled Chinese vocabulary.")
flags.DEFINE_bool("do_lower_case", True, "Lower-case and strip accents (true for all Chinese BERT checkpoints).")
flags.DEFINE_bool("fullwidth_to_halfwidth", None, "Map full-width forms (U+FF01..U+FF5E, U+3000) to half-width "
                  "before WordPiece, as siBert's tokenizer does. Default: on for a siBert checkpoint, else off.")
flags.DEFINE_string("output_dir", None, "Where results go; must be empty unless --overwrite_output_dir.")
flags.DEFINE_bool("overwrite_output_dir", False, "Allow a non-empty --output_dir.")
flags.DEFINE_integer("max_seq_length", 512, "Tokens per window, [CLS] question [SEP] passage [SEP].")
flags.DEFINE_integer("doc_stride", 128, "Word pieces between the starts of consecutive windows.")
flags.DEFINE_integer("max_query_length", 64, "Question word pieces kept.")
flags.DEFINE_integer("max_answer_length", 50, "Longest answer, in word pieces.")
flags.DEFINE_integer("n_best_size", 20, "Candidates per question in nbest_predictions.json.")
flags.DEFINE_float("null_score_threshold", 0.0, "cjrc: answer unknown when the null score beats the best answer by more than this.")
flags.DEFINE_float("learning_rate", 3e-5, "Peak learning rate.")
flags.DEFINE_float("num_train_epochs", 2.0, "Epochs (may be fractional).")
flags.DEFINE_integer("train_batch_size", 32, "Global batch per optimizer step (all processes and accumulation steps).")
flags.DEFINE_integer("eval_batch_size", 64, "Evaluation batch per process.")
flags.DEFINE_integer("gradient_accumulation_steps", 1, "Micro-steps per optimizer step.")
flags.DEFINE_float("warmup_proportion", 0.1, "Fraction of steps with linear warm-up.")
flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (not on biases and LayerNorm).")
flags.DEFINE_float("adam_epsilon", 1e-6, "AdamW epsilon.")
flags.DEFINE_float("max_grad_norm", 1.0, "Global gradient-norm clip (0: off).")
flags.DEFINE_bool("gradient_checkpointing", False, "Recompute each encoder layer in the backward pass: less "
                  "activation memory for long sequences, about a third more compute.")
flags.DEFINE_enum("precision", "fp32", ["fp32", "bf16", "fp16"], "Mixed precision (autocast; fp16 adds loss scaling).")
flags.DEFINE_float("eval_every", 0.0, "Evaluate every N optimizer steps (N >= 1) or every fraction of an epoch (0 < N < 1); "
                   "always at the end.")
flags.DEFINE_list("seeds", ["123"], "Training seeds; each is a full run from the same initial weights.")
flags.DEFINE_enum("attention", None, ["eager", "sdpa", "fused"], "Attention implementation (default: the config's); "
                  "fused uses cnbert's C++/CUDA kernels for the masked softmax and the FFN's bias + GELU.")
flags.DEFINE_float("hidden_dropout_prob", None, "Override the config's hidden dropout.")
flags.DEFINE_float("attention_probs_dropout_prob", None, "Override the config's attention dropout.")
flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "torch: where to run.")
flags.DEFINE_enum("distribution_strategy", "one_device", ["one_device", "mirrored", "multi_worker_mirrored"],
                  "tf: tf.distribute strategy.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
# predict mode
flags.DEFINE_string("model_dir", None, "predict: a directory saved by cnbert (best_model).")
flags.DEFINE_string("predict_file", None, "predict: questions to answer (SQuAD-style JSON, or CAIL2019 for cjrc).")
flags.DEFINE_string("question", None, "predict: one question (with --context).")
flags.DEFINE_string("context", None, "predict: the passage for --question.")

SEED_LIMIT = 2**31
# Saved beside each best model, so that predict mode cuts and decodes as the training run did.
PREDICT_SETTINGS = ("max_seq_length", "doc_stride", "max_query_length", "max_answer_length", "do_lower_case",
                    "fullwidth_to_halfwidth", "n_best_size", "null_score_threshold")
PREDICT_SETTINGS_FILE = "cnbert_mrc_settings.json"
PATH_FLAGS = ("train_file", "dev_file", "test_file", "init_checkpoint", "bert_config_file", "vocab_file", "output_dir",
              "model_dir", "predict_file")


def _expand_paths():
    # Flag files name data as $CNBERT_DATA/...; expand environment variables and ~ once, up front.
    for name in PATH_FLAGS:
        value = getattr(FLAGS, name)
        if value:
            setattr(FLAGS, name, os.path.expanduser(os.path.expandvars(value)))


def _require_file(name):
    path = getattr(FLAGS, name)
    if not path:
        raise app.UsageError(f"--{name} is required here")
    if not Path(path).is_file():
        raise app.UsageError(f"--{name}={path}: no such file")


def _model_config() -> tuple[BertConfig, Path]:
    """The model config (with flag overrides) and the vocabulary file, validated together."""
    overrides = {k: getattr(FLAGS, k) for k in ("attention", "hidden_dropout_prob", "attention_probs_dropout_prob")
                 if getattr(FLAGS, k) is not None}
    if FLAGS.init_checkpoint:
        source = Path(FLAGS.init_checkpoint)
        directory = _checkpoint_directory(source)
        config = read_pretrained_config(source, **overrides)  # BERT or ALBERT, any supported layout
        _default_fullwidth_to_halfwidth(sibert=is_sibert_checkpoint(source))
        vocab = Path(FLAGS.vocab_file) if FLAGS.vocab_file else directory / "vocab.txt"
        if not vocab.is_file():
            raise app.UsageError(f"--init_checkpoint={source}: {directory} has no vocab.txt; pass --vocab_file")
    elif FLAGS.bert_config_file:
        config = read_config(FLAGS.bert_config_file).replace(**overrides)
        _default_fullwidth_to_halfwidth(sibert=False)
        vocab = Path(FLAGS.vocab_file) if FLAGS.vocab_file else bundled_vocab_path()
    else:
        raise app.UsageError("pass --init_checkpoint (a pretrained model) or --bert_config_file (random initialisation)")
    check_vocab_size(vocab, config)
    _check_model_fits_task(config, str(FLAGS.init_checkpoint or FLAGS.bert_config_file))
    if FLAGS.max_seq_length > config.max_position_embeddings:
        raise app.UsageError(f"--max_seq_length={FLAGS.max_seq_length} exceeds the model's max_position_embeddings="
                         f"{config.max_position_embeddings}")
    return config, vocab


def _checkpoint_directory(source: Path) -> Path:
    """The model directory of --init_checkpoint: itself, or the directory of a TF checkpoint prefix
    (one of several checkpoints a pretraining run keeps beside its config and vocabulary)."""
    if source.is_dir():
        find_weights(source)
        return source
    if source.with_name(source.name + ".index").is_file():
        return source.parent
    raise app.UsageError(f"--init_checkpoint={source}: neither a model directory nor a TF checkpoint prefix "
                         "(PREFIX.index is missing)")


def _default_fullwidth_to_halfwidth(sibert: bool) -> None:
    # siBert was pretrained on half-width text (its tokenizer maps full-width forms first): without the
    # same map, full-width letters, digits and punctuation would reach it as other tokens, or [UNK]
    if FLAGS.fullwidth_to_halfwidth is None:
        FLAGS.fullwidth_to_halfwidth = sibert


def _check_model_fits_task(config: BertConfig, source: str) -> None:
    # A question and its passage are told apart by token types 0 and 1.
    if config.type_vocab_size < 2:
        raise app.UsageError(f"{source}: type_vocab_size is {config.type_vocab_size}, but reading comprehension "
                             "needs token types 0 (question) and 1 (passage)")
    _check_framework_takes(config)


def _check_framework_takes(config: BertConfig) -> None:
    if FLAGS.framework == "tf" and isinstance(config, AlbertConfig):
        raise app.UsageError("--framework=tf implements BERT (and BERT-typed RoBERTa-wwm-ext) only, and this model "
                             "is ALBERT: use --framework=torch")


def _feature_config() -> FeatureConfig:
    try:
        return FeatureConfig(max_seq_length=FLAGS.max_seq_length, max_query_length=FLAGS.max_query_length,
                             doc_stride=FLAGS.doc_stride)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def _training_config(seed: int) -> TrainingConfig:
    try:
        return TrainingConfig(
            learning_rate=FLAGS.learning_rate, num_train_epochs=FLAGS.num_train_epochs,
            train_batch_size=FLAGS.train_batch_size, eval_batch_size=FLAGS.eval_batch_size,
            gradient_accumulation_steps=FLAGS.gradient_accumulation_steps, warmup_proportion=FLAGS.warmup_proportion,
            weight_decay=FLAGS.weight_decay, adam_epsilon=FLAGS.adam_epsilon, max_grad_norm=FLAGS.max_grad_norm,
            precision=FLAGS.precision, seed=seed, eval_every=FLAGS.eval_every,
            gradient_checkpointing=FLAGS.gradient_checkpointing)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def _seeds() -> list[int]:
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, got {','.join(FLAGS.seeds)}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise app.UsageError(f"--seeds must be distinct integers, got {seeds}")
    for name, values in (("seeds", seeds), ("init_seed", [FLAGS.init_seed])):
        # every process seeds numpy with seed + rank, which must stay below 2**32
        if not all(0 <= value < SEED_LIMIT for value in values):
            raise app.UsageError(f"--{name} must be in [0, {SEED_LIMIT}), got {values}")
    return seeds


def _check_output_dir(rank0: bool):
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    out = Path(FLAGS.output_dir)
    _check_writable_directory("output_dir", out)
    if rank0 and out.exists() and any(out.iterdir()) and not FLAGS.overwrite_output_dir:
        raise app.UsageError(f"--output_dir={out} is not empty; pass --overwrite_output_dir to reuse it")


def _check_writable_directory(name: str, path: Path) -> None:
    """A directory, or a path whose nearest existing ancestor is one (so it can be created)."""
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, a file"
        raise app.UsageError(f"--{name}={path} {where}; it must be a directory")


def _check_decoding_flags() -> None:
    for name in ("n_best_size", "max_answer_length"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1, got {getattr(FLAGS, name)}")


def _remove_earlier_outputs(out: Path, seeds: list[int]) -> None:
    """With --overwrite_output_dir: delete what this run is about to write, so that no file of an
    earlier run (a TensorBoard event file, a test prediction, a report of other seeds) is mistaken
    for this run's, even if this run stops early."""
    for name in [f"seed_{seed}" for seed in seeds] + ["test", "report.md", "report.json"]:
        path = out / name
        if path.exists():
            print(f"--overwrite_output_dir: removing {path} of an earlier run", flush=True)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _backend():
    """The framework's backend, with --device checked (and, for TensorFlow, applied) before the
    framework touches a device."""
    if FLAGS.framework == "tf":
        from cnbert.tf import backend
    else:
        from cnbert.torch import backend
    try:
        backend.use_device(FLAGS.device)
    except ValueError as e:
        raise app.UsageError(f"--device={FLAGS.device}: {e}") from None
    return backend


TRAIN_ONLY_FLAGS = ("train_file", "dev_file", "test_file", "do_predict", "cjrc_dev_fraction", "init_checkpoint",
                    "bert_config_file", "init_seed", "vocab_file", "seeds", "learning_rate", "num_train_epochs",
                    "train_batch_size", "gradient_accumulation_steps", "warmup_proportion", "weight_decay",
                    "adam_epsilon", "max_grad_norm", "gradient_checkpointing", "eval_every", "hidden_dropout_prob",
                    "attention_probs_dropout_prob")
PREDICT_ONLY_FLAGS = ("model_dir", "predict_file", "question", "context")
# Only cjrc has unanswerable questions, so only its decoding compares the null score.
NULL_SCORE_TASKS = ("cjrc",)


def _check_flag_combinations() -> None:
    """Refuse flags this run would silently ignore: a user who passes them expects them to act."""
    ignored = TRAIN_ONLY_FLAGS if FLAGS.mode == "predict" else PREDICT_ONLY_FLAGS
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
    elif _single_question():
        for name in ("output_dir", "overwrite_output_dir"):
            if FLAGS[name].present:
                raise app.UsageError(f"--{name} is for --predict_file; --question/--context print the answer "
                                     "and write nothing")
    if FLAGS.framework == "torch" and FLAGS.distribution_strategy != "one_device":
        raise app.UsageError("--distribution_strategy is for --framework=tf; with torch, start one process per GPU "
                             "with torchrun (see README)")
    if FLAGS.framework == "tf" and FLAGS["attention"].present:
        raise app.UsageError("--attention chooses among the PyTorch implementations; --framework=tf has one "
                             "(XLA-compiled) attention")
    # a value other than the default: a run's flags.txt names every flag, and must work as a flag file
    if FLAGS.null_score_threshold != FLAGS["null_score_threshold"].default and FLAGS.task not in NULL_SCORE_TASKS:
        raise app.UsageError(f"--null_score_threshold applies to tasks with unanswerable questions "
                             f"({', '.join(NULL_SCORE_TASKS)}), and --task={FLAGS.task} has none")


def _single_question() -> bool:
    """Predict mode answers one --question about one --context (printed), not a --predict_file."""
    return FLAGS.question is not None or FLAGS.context is not None


def _effective_flags() -> str:
    """This runner's flags as a flag file that reproduces the run."""
    lines = [f"# cnbert-mrc flags, {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    for flag in sorted(FLAGS.get_key_flags_for_module(sys.modules[__name__]), key=lambda f: f.name):
        if flag.value is not None:
            lines.append(flag.serialize())
    return "\n".join(lines) + "\n"


# ---- data ------------------------------------------------------------------------------------

def _load_splits(task: tasks.MrcTask):
    """(train examples, dev examples, dev gold JSON restricted to dev, dev gold path)."""
    train_result = task.read(FLAGS.train_file)  # readers log their repair / consistency report
    if FLAGS.cjrc_dev_fraction is not None:
        train, dev = tasks.split_by_passage(train_result.examples, FLAGS.cjrc_dev_fraction)
        gold_path = FLAGS.train_file
    else:
        dev_result = task.read(FLAGS.dev_file)
        train, dev, gold_path = train_result.examples, dev_result.examples, FLAGS.dev_file
    gold = tasks.restrict_gold(read_json_file(gold_path), {e.qas_id for e in dev})
    return train, dev, gold, gold_path


def _predict_examples(trainer, examples, features, task_name, gold=None, gold_path=None):
    outputs = trainer.predict(features.model_arrays())
    predictions = postprocess_predictions(
        examples, features, outputs["start_logits"], outputs["end_logits"], class_logits=outputs.get("class_logits"),
        n_best_size=FLAGS.n_best_size, max_answer_length=FLAGS.max_answer_length,
        null_score_threshold=FLAGS.null_score_threshold)
    metrics = tasks.score(task_name, gold, predictions.answers, source=gold_path) if gold is not None else None
    return predictions, metrics


# ---- training ----------------------------------------------------------------------------------

def train_and_evaluate():
    task = tasks.get_task(FLAGS.task)
    _require_file("train_file")
    if FLAGS.cjrc_dev_fraction is not None:
        if not 0 < FLAGS.cjrc_dev_fraction < 1:
            raise app.UsageError(f"--cjrc_dev_fraction must be in (0, 1), got {FLAGS.cjrc_dev_fraction}")
        if FLAGS.task != "cjrc":
            raise app.UsageError("--cjrc_dev_fraction applies to --task=cjrc only")
        if FLAGS.dev_file and Path(FLAGS.dev_file).resolve() != Path(FLAGS.train_file).resolve():
            raise app.UsageError("with --cjrc_dev_fraction, dev questions come from --train_file; drop --dev_file or make it the same file")
    else:
        _require_file("dev_file")
        if Path(FLAGS.dev_file).resolve() == Path(FLAGS.train_file).resolve():
            print("WARNING: --dev_file is --train_file: dev scores (and the best-model choice) will be measured on "
                  "training data", flush=True)
    if FLAGS.do_predict:
        _require_file("test_file")
    seeds = _seeds()
    _check_decoding_flags()
    feature_config = _feature_config()
    config, vocab = _model_config()
    backend = _backend()
    ctx = backend.init_distributed(FLAGS.device) if FLAGS.framework == "torch" else None
    rank0 = ctx is None or ctx.is_main
    _check_output_dir(rank0)
    if rank0 and FLAGS.fullwidth_to_halfwidth and not FLAGS["fullwidth_to_halfwidth"].present:
        print("siBert checkpoint: full-width characters are mapped to half-width before WordPiece, as siBert's "
              "tokenizer does (--fullwidth_to_halfwidth)", flush=True)
    training_configs = {seed: _training_config(seed) for seed in seeds}
    processes = ctx.world_size if ctx is not None else 1
    try:
        training_configs[seeds[0]].check_batch_split(processes)
    except ValueError:
        raise app.UsageError(f"--train_batch_size={FLAGS.train_batch_size} cannot be split over {processes} "
                             f"process(es) x {FLAGS.gradient_accumulation_steps} accumulation steps") from None
    out = Path(FLAGS.output_dir)
    if not FLAGS.init_checkpoint:
        print(f"NOTE: no --init_checkpoint: the model is RANDOMLY INITIALISED from {FLAGS.bert_config_file}; "
              "its scores say nothing about a pretrained model. Point --init_checkpoint at a pretrained Chinese "
              "BERT directory for real numbers.", flush=True)

    def initial_model():
        backend.seed_everything(FLAGS.init_seed)  # identical initial weights for every seed
        model, load_report = backend.create_model(FLAGS.task, config, FLAGS.init_checkpoint, vocab)
        if load_report and load_report.initialised and rank0:
            print(f"freshly initialised task head (not in the checkpoint): {', '.join(load_report.initialised)}")
        return model

    # Load the checkpoint, then read and featurise every data file (the test file too), before
    # anything is written: bad input fails at once, and leaves an earlier run's outputs intact.
    first_model = initial_model()
    tokenizer = ChineseBertTokenizer(vocab, do_lower_case=FLAGS.do_lower_case,
                                     fullwidth_to_halfwidth=FLAGS.fullwidth_to_halfwidth)
    train_examples, dev_examples, dev_gold, gold_path = _load_splits(task)
    train_features = build_features(train_examples, tokenizer, feature_config, training=True,
                                    answer_classes=task.answer_classes)
    if len(train_features) == 0:
        raise DataError(FLAGS.train_file, "", "no training features: no question has an answer that could be "
                                              "located in its passage (see the warnings above)")
    dev_features = build_features(dev_examples, tokenizer, feature_config, training=False)
    log.info("%d train questions -> %d features; %d dev questions -> %d features", len(train_examples),
             len(train_features), len(dev_examples), len(dev_features))
    train_arrays = train_features.model_arrays()
    test = _read_test_split(task, tokenizer, feature_config) if FLAGS.do_predict else None
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        _remove_earlier_outputs(out, seeds)
        write_text(out / "flags.txt", _effective_flags())

    per_seed, best_dirs, stopped = {}, {}, {}
    for seed in seeds:
        seed_dir = out / f"seed_{seed}"
        model = first_model if seed == seeds[0] else initial_model()
        kwargs = {"ctx": ctx} if FLAGS.framework == "torch" else {"strategy_name": FLAGS.distribution_strategy}
        trainer = backend.Trainer(model, training_configs[seed], FLAGS.task, log_dir=seed_dir / "tensorboard",
                                  show_progress=FLAGS.progress, **kwargs)
        latest = {}

        def evaluate():
            latest["predictions"], metrics = _predict_examples(trainer, dev_examples, dev_features,
                                                               FLAGS.task, dev_gold, gold_path)
            return metrics

        def on_new_best(metrics, seed_dir=seed_dir, model=model, latest=latest):
            # the model, its settings, predictions and scores of one evaluation, replaced as a set:
            # a Ctrl-C never leaves a model beside another evaluation's predictions or scores
            with replaced_together(seed_dir) as staging:
                backend.save_pretrained(model, staging / "best_model", vocab)
                write_json(staging / "best_model" / PREDICT_SETTINGS_FILE,
                           {name: getattr(FLAGS, name) for name in PREDICT_SETTINGS})
                latest["predictions"].write(staging)
                write_json(staging / "eval_results.json", metrics)

        try:
            result = trainer.fit(train_arrays, evaluate=evaluate, criterion=tasks.criterion, on_new_best=on_new_best)
        except NonFiniteLossError as error:
            # a diverged seed stops alone: the others still run, and the report names it
            stopped[seed] = str(error)
            if rank0:
                print(f"seed {seed}: stopped: {error}", file=sys.stderr, flush=True)
                if error.result is not None:
                    write_json(seed_dir / "training_history.json", training_history(error.result, stopped=str(error)))
            continue
        if rank0:
            write_json(seed_dir / "training_history.json", training_history(result))
            print(f"seed {seed}: best dev at step {result.best_step}: "
                  + ", ".join(f"{m} {result.best_metrics[m]:.3f}" for m in tasks.METRIC_NAMES), flush=True)
        per_seed[seed] = result.best_metrics
        best_dirs[seed] = seed_dir / "best_model"

    if not per_seed:
        raise TrainingStopped(f"every seed stopped before the end of training: {stopped}")
    summary = summarize_seeds(per_seed, tasks.METRIC_NAMES)
    best_seed = max(per_seed, key=lambda s: tasks.criterion(per_seed[s]))
    summary["best_seed"] = best_seed
    if stopped:
        summary["stopped_seeds"] = {str(seed): reason for seed, reason in stopped.items()}
    if rank0:
        title = f"{task.title} dev ({Path(FLAGS.init_checkpoint).name if FLAGS.init_checkpoint else 'random init'})"
        markdown = format_markdown(summary, title)
        write_text(out / "report.md", markdown)
        write_json(out / "report.json", summary)
        print(markdown, flush=True)
    if FLAGS.do_predict:
        if ctx is not None:
            backend.barrier(ctx)  # rank 0 alone saves best_model: no process may read it before it is complete
        _score_test(backend, test, best_dirs[best_seed], ctx, out, rank0)
    if stopped:
        raise TrainingStopped(f"seed(s) {', '.join(map(str, stopped))} stopped before the end of training; "
                              f"the report covers the others")


class TrainingStopped(RuntimeError):
    """A seed's training stopped (its loss stayed NaN/inf); the runner exits with status 1."""


def training_history(result, stopped: str | None = None) -> dict:
    """training_history.json of a FitResult (with why training stopped early, if it did). JSON has
    no NaN: a non-finite loss is written as null."""
    losses = [(step, loss if math.isfinite(loss) else None) for step, loss in result.losses]
    history = {"evaluations": result.evaluations, "losses": losses}
    if stopped:
        history["stopped"] = stopped
    return history


class TestSplit(NamedTuple):
    examples: list
    features: object
    gold: dict


def _read_test_split(task, tokenizer, feature_config) -> TestSplit:
    examples = task.read(FLAGS.test_file).examples  # labelled: it is scored
    features = build_features(examples, tokenizer, feature_config, training=False)
    return TestSplit(examples, features, read_json_file(FLAGS.test_file))


def _score_test(backend, test: TestSplit, model_dir, ctx, out, rank0):
    model = backend.load_finetuned(model_dir, FLAGS.task)
    kwargs = {"ctx": ctx} if FLAGS.framework == "torch" else {"strategy_name": FLAGS.distribution_strategy}
    trainer = backend.Trainer(model, _training_config(0), FLAGS.task, show_progress=False, **kwargs)
    predictions, metrics = _predict_examples(trainer, test.examples, test.features, FLAGS.task, test.gold,
                                             FLAGS.test_file)
    if rank0:
        with replaced_together(out / "test") as staging:
            predictions.write(staging)
            write_json(staging / "test_results.json", {**metrics, "model_dir": str(model_dir)})
        print("test: " + ", ".join(f"{m} {metrics[m]:.3f}" for m in tasks.METRIC_NAMES), flush=True)


# ---- predict mode ------------------------------------------------------------------------------

def predict():
    task = tasks.get_task(FLAGS.task)
    if not FLAGS.model_dir:
        raise app.UsageError("--mode=predict needs --model_dir, a directory saved by cnbert")
    if not Path(FLAGS.model_dir).is_dir():
        raise app.UsageError(f"--model_dir={FLAGS.model_dir}: not a directory (expected a model saved by cnbert, "
                             "e.g. <output_dir>/seed_123/best_model)")
    single = _single_question()
    if single == bool(FLAGS.predict_file):
        raise app.UsageError("--mode=predict needs either --predict_file or both --question and --context")
    if single and not (FLAGS.question and FLAGS.context):
        raise app.UsageError("--question and --context go together and must not be empty")
    if FLAGS.predict_file:
        _require_file("predict_file")
        if not FLAGS.output_dir:
            raise app.UsageError("--predict_file needs --output_dir for predictions.json")
    _use_training_settings(Path(FLAGS.model_dir))
    config = read_pretrained_config(FLAGS.model_dir)
    _check_model_fits_task(config, FLAGS.model_dir)
    _check_decoding_flags()
    if FLAGS.output_dir:
        _check_output_dir(rank0=True)
    if FLAGS.max_seq_length > config.max_position_embeddings:
        raise app.UsageError(f"--max_seq_length={FLAGS.max_seq_length} exceeds the model's max_position_embeddings="
                             f"{config.max_position_embeddings}; pass the --max_seq_length it was trained with")
    backend = _backend()
    overrides = {"attention": FLAGS.attention} if FLAGS.attention else {}
    model = backend.load_finetuned(FLAGS.model_dir, FLAGS.task, **overrides)
    tokenizer = ChineseBertTokenizer(Path(FLAGS.model_dir) / "vocab.txt", do_lower_case=FLAGS.do_lower_case,
                                     fullwidth_to_halfwidth=bool(FLAGS.fullwidth_to_halfwidth))
    if single:
        examples = [MrcExample(qas_id="question", question_text=FLAGS.question, context_text=FLAGS.context,
                               answers=())]
    else:
        examples = task.read(FLAGS.predict_file, labelled=False).examples  # answers, if any, are not needed
    features = build_features(examples, tokenizer, _feature_config(), training=False)
    kwargs = ({"ctx": backend.init_distributed(FLAGS.device)} if FLAGS.framework == "torch"
              else {"strategy_name": FLAGS.distribution_strategy})
    trainer = backend.Trainer(model, _training_config(0), FLAGS.task, show_progress=False, **kwargs)
    predictions, _ = _predict_examples(trainer, examples, features, FLAGS.task)
    if single:
        print(json.dumps({"question": FLAGS.question, "answer": predictions.answers["question"]}, ensure_ascii=False))
    else:
        paths = predictions.write(FLAGS.output_dir)
        print(f"wrote {paths[0]} and {paths[1]} ({len(examples)} questions)")


def _use_training_settings(model_dir: Path) -> None:
    """Window and decoding flags not given on the command line take the values the model was
    trained with (saved beside it by the training run)."""
    path = model_dir / PREDICT_SETTINGS_FILE
    if not path.is_file():
        return
    saved = read_json_file(path)
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: expected a JSON object of training settings, got {type(saved).__name__}")
    taken = {name: saved[name] for name in PREDICT_SETTINGS if name in saved and not FLAGS[name].present}
    for name, value in taken.items():
        # bool is an int in Python; a saved true must not pass for a window length, nor 1 for a bool
        default = FLAGS[name].default
        if isinstance(FLAGS[name], flags.BooleanFlag):
            expected, ok = "true or false", type(value) is bool
        elif isinstance(default, int):
            expected, ok = "an integer", type(value) is int
        else:
            expected, ok = "a finite number", type(value) in (int, float) and math.isfinite(value)
        if not ok:
            raise ConfigError(f"{path}: {name} must be {expected}, got {value!r}")
        setattr(FLAGS, name, value)
    if taken:
        print("as in training (" + path.name + "): " + ", ".join(f"--{k}={v}" for k, v in taken.items()), flush=True)


EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # 130: 128 + SIGINT, as shells report Ctrl-C


def _print_usage_error(error) -> None:
    print(f"cnbert-mrc: error: {error}\n(cnbert-mrc --help lists the flags)", file=sys.stderr)


def main(argv):
    try:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not FLAGS.task:
            raise app.UsageError("--task is required")
        _expand_paths()
        _check_flag_combinations()
        predict() if FLAGS.mode == "predict" else train_and_evaluate()
    except app.UsageError as e:
        # printed here rather than by absl, which under `python -m` or torchrun adds the module
        # docstring and every flag's help, burying the one line that matters
        _print_usage_error(e)
        return EXIT_USAGE
    except (DataError, ConfigError, TrainingStopped) as e:
        # bad input (a data file, a checkpoint, a config), the message naming the file and the
        # record; or a seed whose training diverged, after the other seeds' report was written
        print(f"cnbert-mrc: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("cnbert-mrc: interrupted; every output already written is complete (each set is replaced whole), "
              "and nothing half-written is left (a training run writes its report only at the end)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _parse_flags(argv):
    """absl's parsing, with a flag it cannot parse (unknown, or a bad value) reported like any other
    usage error: `cnbert-mrc: error: ...` and exit status 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _print_usage_error(e)
        sys.exit(EXIT_USAGE)


def run():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
