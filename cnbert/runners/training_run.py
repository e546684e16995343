"""A runner's multi-seed training run: the checks before any data is read (start_training), every
seed trained from the same initial weights with its best dev evaluation kept (train_seeds), the
report over seeds, and the test file scored once with the best seed's model. train_on_files is
the whole run of a task whose files are all labelled and read alike (classification, NER)."""
from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import app

import cnbert
from cnbert.config import BertConfig
from cnbert.errors import DataError
from cnbert.io_utils import replaced_together, write_json, write_text
from cnbert.report import describe_environment, describe_seen, format_markdown, summarize_seeds
from cnbert.runners.common import (FLAGS, PATH_FLAGS, SEED_LIMIT, TrainingStopped, backend, check_output_dir, log,
                                   model_config, note, process_group, require_file, training_config)
from cnbert.runners.run_dir import (BEST_MODEL_DIR, DEV_GOLD_FILE, EVAL_RESULTS_FILE, FLAGS_FILE, HISTORY_FILE,
                                    NOT_RECORDED, REPORT_FILES, TEST_DIR, TEST_RESULTS_FILE, EarlierSeeds,
                                    earlier_seeds, resume_seeds, seed_dir)
from cnbert.tokenization import ChineseBertTokenizer
from cnbert.training import NonFiniteLossError, TrainingConfig


def checked_seeds() -> list[int]:
    try:
        values = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, got {','.join(FLAGS.seeds)}") from None
    if not values or len(set(values)) != len(values):
        raise app.UsageError(f"--seeds must be distinct integers, got {values}")
    for name, checked in (("seeds", values), ("init_seed", [FLAGS.init_seed])):
        # every process seeds numpy with seed + rank, which must stay below 2**32
        if not all(0 <= value < SEED_LIMIT for value in checked):
            raise app.UsageError(f"--{name} must be in [0, {SEED_LIMIT}), got {checked}")
    return values


def check_enough_features(count: int, processes: int) -> None:
    """Every process and accumulation micro-step needs a training feature (the trainer's check, made
    before the output directory is touched)."""
    try:
        training_config(0).check_enough_examples(count, processes)
    except ValueError:
        raise DataError(FLAGS.train_file, "", f"{count} training feature(s), too few to give each of {processes} "
                        f"process(es) x {FLAGS.gradient_accumulation_steps} accumulation step(s) one") from None


def check_batch_split(config: TrainingConfig, processes: int) -> None:
    try:
        config.check_batch_split(processes)
    except ValueError:
        raise app.UsageError(f"--train_batch_size={FLAGS.train_batch_size} cannot be split over {processes} "
                             f"process(es) x {FLAGS.gradient_accumulation_steps} accumulation steps") from None


def remove_earlier_outputs(out: Path, seeds: list[int], resume: bool = False) -> None:
    """With --overwrite_output_dir or --resume: delete what this run is about to write (for `seeds`,
    the seeds it trains), so that no file of an earlier run (a TensorBoard event file, a test
    prediction, a report of other seeds) is mistaken for this run's, even if this run stops early."""
    why = "--resume: removing {} of the interrupted run" if resume else "--overwrite_output_dir: removing {} of an earlier run"
    for path in [seed_dir(out, seed) for seed in seeds] + [out / name for name in (TEST_DIR, *REPORT_FILES,
                                                                                 DEV_GOLD_FILE)]:
        if path.exists():
            print(why.format(path), flush=True)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def effective_flags(program: str, runner_module: str) -> str:
    """The runner's flags (its own and the shared ones it adopted) as a flag file that reproduces the run."""
    lines = [f"# {program} flags, {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    for flag in sorted(FLAGS.get_key_flags_for_module(sys.modules[runner_module]), key=lambda f: f.name):
        if flag.value is not None and flag.name not in NOT_RECORDED:  # the run's flags, not how to treat its folder
            lines.append(flag.serialize())
    return "\n".join(lines) + "\n"


def note_random_init() -> None:
    if not FLAGS.init_checkpoint:
        note(f"NOTE: no --init_checkpoint: the model is RANDOMLY INITIALISED from {FLAGS.bert_config_file}; "
             "its scores say nothing about a pretrained model. Point --init_checkpoint at a pretrained Chinese "
             "BERT directory for real numbers.")


@dataclasses.dataclass
class TrainingSetup:
    """A checked training run, ready for its data: the seeds, the model config and vocabulary, the
    backend and process group, the first seed's initial model (a checkpoint that does not load has
    failed by now, before any data is read or anything written), the tokenizer, what trains the
    models (the environment each seed's history records) and (--resume) the seeds the interrupted
    run finished. check_examples adds what the data holds."""

    program: str
    runner_module: str
    seeds: list[int]
    config: BertConfig
    vocab: Path
    backend: Any
    ctx: Any  # process_group's
    rank0: bool
    out: Path
    initial_model: Callable[[], Any]
    first_model: Any
    tokenizer: ChineseBertTokenizer
    environment: dict
    earlier: EarlierSeeds
    # check_examples': each evaluated split's examples that are training ones, the indices of the
    # others where a split has both (unseen), and the digests of the examples every seed trains and
    # is evaluated on
    seen_in_training: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    unseen: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    data: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def provenance(self) -> dict:
        """What each seed's history records of how it was made: the environment and the data."""
        return {"environment": self.environment, "data": self.data}

    @property
    def seeds_to_train(self) -> list[int]:
        return [seed for seed in self.seeds if seed not in self.earlier.finished and seed not in self.earlier.stopped]


def start_training(program: str, runner_module: str, task, min_token_types: int, what: str) -> TrainingSetup:
    """Check the shared training flags (with --resume, against the interrupted run, whose finished
    seeds are read) and build the first initial model; nothing is written yet. task: has
    .metric_names; min_token_types / what: as for model_config."""
    if FLAGS.do_predict:
        require_file("test_file")
    seed_list = checked_seeds()
    framework_backend = backend()
    ctx = process_group(framework_backend)  # before anything runs a TensorFlow op
    config, vocab = model_config(min_token_types, what)
    rank0 = ctx.is_main
    check_output_dir(rank0, lambda flag: framework_backend.any_process(ctx, flag))
    out = Path(FLAGS.output_dir)
    environment = {"cnbert": cnbert.__version__, **framework_backend.environment(ctx)}
    earlier = EarlierSeeds({}, {})
    if FLAGS.resume:
        earlier = read_interrupted_run(out, effective_flags(program, runner_module), seed_list, task,
                                       lambda flag: framework_backend.any_process(ctx, flag))
        note_other_environments(earlier, environment)
    training_configs = [training_config(seed) for seed in seed_list]  # every seed's settings checked now
    check_batch_split(training_configs[0], ctx.world_size)
    note_random_init()
    initial_model = initial_model_factory(framework_backend, FLAGS.task, config, vocab, rank0)
    first_model = initial_model()
    tokenizer = ChineseBertTokenizer(vocab, do_lower_case=FLAGS.do_lower_case,
                                     fullwidth_to_halfwidth=FLAGS.fullwidth_to_halfwidth)
    return TrainingSetup(program, runner_module, seed_list, config, vocab, framework_backend, ctx, rank0, out,
                         initial_model, first_model, tokenizer, environment, earlier)


def note_other_environments(earlier: EarlierSeeds, environment: dict) -> None:
    """--resume on another device, replica count or version: allowed (a seed is a sample of the
    same protocol either way), but the report's seeds then come from different set-ups, and it
    says so; say it now too."""
    by_environment: dict[str, list[int]] = {}
    for seed, recorded in earlier.environments.items():
        if recorded != environment:
            by_environment.setdefault(describe_environment(recorded), []).append(seed)
    for described, seeds in by_environment.items():
        note(f"NOTE: {_named(seeds)} of the interrupted run trained with {described}; this run trains with "
             f"{describe_environment(environment)}. report.md lists each seed's.")


def _named(seeds: Sequence[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def read_interrupted_run(out: Path, flags_now: str, seeds: list[int], task, any_process: Callable[[bool], bool]
                         ) -> EarlierSeeds:
    """--resume: check the run in `out` against this one and read the seeds it finished. Every
    process reads the folder (as test scoring reads the best model, it must be one they all see);
    any_process(flag) makes them stop together, or agree on what they found."""
    try:
        earlier = earlier_seeds(out, resume_seeds(out, flags_now, seeds, PATH_FLAGS), task.metric_names)
        failed = None
    except (app.UsageError, DataError) as error:
        earlier, failed = None, error
    if any_process(failed is not None):
        raise failed or app.UsageError("--resume: another process could not read the run in --output_dir (it says why)")
    for seed in seeds:
        for found in (earlier.finished, earlier.stopped):
            if any_process(seed in found) != (not any_process(seed not in found)):
                raise app.UsageError(f"--resume: the processes see seed_{seed} in {out} differently; --output_dir "
                                     "must be one folder that every process sees")
    return earlier


def train_on_files(program: str, runner_module: str, task, min_token_types: int, what: str, read: Callable,
                   featurise: Callable, evaluate: Callable, settings_file: str, settings_names: Sequence[str],
                   seen_key: Callable[[Any], Hashable]) -> None:
    """The whole training run of a task whose train, dev (and, with --do_predict, test) files are
    all labelled and read alike (classification, NER): check, read and featurise everything, train
    every seed, report, score the test file.

    task: has .title, .metric_names, .criterion(metrics). read(path) -> examples;
    featurise(examples, tokenizer, path) -> features; evaluate(trainer, examples, features, path,
    unseen) -> (predictions with .write(directory), metrics), unseen as for with_unseen_scores. The
    task and `settings_names` flags are saved beside each best model in `settings_file`. seen_key:
    as for check_examples."""
    require_file("train_file")
    require_file("dev_file")
    warn_if_dev_is_train()
    run = start_training(program, runner_module, task, min_token_types, what)
    splits = {"train": FLAGS.train_file, "dev": FLAGS.dev_file, **({"test": FLAGS.test_file} if FLAGS.do_predict else {})}
    examples = {name: read(path) for name, path in splits.items()}
    features = {name: featurise(examples[name], run.tokenizer, path) for name, path in splits.items()}
    log.info(", ".join(f"{len(examples[name])} {name} examples" for name in splits))
    check_examples(run, examples, seen_key)
    check_enough_features(len(features["train"].model_arrays()["input_ids"]), run.ctx.world_size)
    prepare_output_dir(run)
    train_report_and_test(run, task, features["train"].model_arrays(),
                          lambda trainer: evaluate(trainer, examples["dev"], features["dev"], splits["dev"],
                                                   run.unseen.get("dev")),
                          (lambda trainer: evaluate(trainer, examples["test"], features["test"], splits["test"],
                                                    run.unseen.get("test")))
                          if FLAGS.do_predict else None, settings_file, settings_names)


def train_report_and_test(run: TrainingSetup, task, train_arrays, evaluate_dev: Callable,
                          evaluate_test: Callable | None, settings_file: str, settings_names: Sequence[str]) -> None:
    """Train every seed (train_seeds), write the report, score the test split with the best seed's
    model when evaluate_test is given (--do_predict), and raise TrainingStopped if a seed stopped.
    The task and `settings_names` flags are saved beside each best model in `settings_file`."""
    settings = (settings_file, {name: getattr(FLAGS, name) for name in ("task", *settings_names)})
    runs = train_seeds(run, task, train_arrays, evaluate_dev, settings)
    best_seed = write_report(runs, task, run)
    if evaluate_test is not None:
        score_test(run, runs.best_dirs[best_seed], evaluate_test, task.metric_names)
    raise_if_stopped(runs)


def check_examples(run: TrainingSetup, examples: Mapping[str, Sequence], seen_key: Callable[[Any], Hashable]
                   ) -> None:
    """What the run's data holds, before anything is written. `examples`: {"train", "dev", maybe
    "test": the split's examples}; seen_key(example): what makes an evaluated example a training
    one (the task module's seen_key).

    Notes the evaluated examples that are training ones (seen_in_training) and keeps the counts
    for the report; keeps the digests of the training and dev examples (examples_digest) for each
    seed's history; with --resume, refuses to report a kept seed beside new ones when it was
    trained or evaluated on other examples (a data file changed, or how cnbert reads or splits it,
    as the CJRC split did when copies of a passage became one)."""
    unseen = unseen_in_training(examples, seen_key)
    run.seen_in_training = _seen_counts(examples, unseen)
    for name, counts in run.seen_in_training.items():
        if counts["seen"]:
            note(f"NOTE: {describe_seen(name, **counts)}: the model is scored on examples it was trained on")
    run.unseen = {name: rows for name, rows in unseen.items() if 0 < len(rows) < len(examples[name])}
    run.data = {name: examples_digest(examples[name]) for name in ("train", "dev")}
    other = [seed for seed, recorded in run.earlier.data.items() if recorded not in (None, run.data)]
    if other:
        raise app.UsageError(f"--resume: {_named(other)} of the run in {run.out} trained or was evaluated on other "
                             "examples than these flags give now (a data file changed, or how cnbert reads or splits "
                             "it), so its scores cannot be reported beside new seeds'. Start a new run")
    unrecorded = [seed for seed, recorded in run.earlier.data.items() if recorded is None]
    if unrecorded:
        note(f"NOTE: {_named(unrecorded)} of the interrupted run recorded no digest of its examples (an older "
             "cnbert): nothing shows they are this run's")


def seen_in_training(examples: Mapping[str, Sequence], seen_key: Callable[[Any], Hashable]
                     ) -> dict[str, dict[str, int]]:
    """{split: {"seen": n, "of": its examples}} for each split of `examples` but "train": how many
    of its examples are training examples by seen_key (the same text, whatever the label). Standard
    splits can overlap their training file (ChnSentiCorp: 338 of 1200 dev and 331 of 1200 test
    reviews), and scores on such examples measure what the model remembers, not how it reads."""
    return _seen_counts(examples, unseen_in_training(examples, seen_key))


def unseen_in_training(examples: Mapping[str, Sequence], seen_key: Callable[[Any], Hashable]
                       ) -> dict[str, list[int]]:
    """{split: the indices of its examples that are not training examples by seen_key} for each
    split of `examples` but "train"."""
    trained_on = {seen_key(example) for example in examples["train"]}
    return {name: [i for i, example in enumerate(split) if seen_key(example) not in trained_on]
            for name, split in examples.items() if name != "train"}


def _seen_counts(examples: Mapping[str, Sequence], unseen: Mapping[str, list[int]]) -> dict[str, dict[str, int]]:
    return {name: {"seen": len(examples[name]) - len(rows), "of": len(examples[name])} for name, rows in unseen.items()}


def with_unseen_scores(metrics: dict | None, unseen: Sequence[int] | None, score: Callable[[list[int]], dict]
                       ) -> dict | None:
    """`metrics` of an evaluated split with, when only part of it are training examples (unseen:
    the indices of the others, TrainingSetup.unseen), metrics["unseen"]: score(unseen), the same
    scores over those examples alone, and their number."""
    if metrics is not None and unseen:
        metrics["unseen"] = {"examples": len(unseen), **score(list(unseen))}
    return metrics


def examples_digest(examples: Sequence) -> str:
    """SHA-256 of examples as this cnbert reads them: every field of each (its repr), in order."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(repr(example).encode("utf-8") + b"\n")
    return digest.hexdigest()


def warn_if_dev_is_train() -> None:
    if Path(FLAGS.dev_file).resolve() == Path(FLAGS.train_file).resolve():
        note("WARNING: --dev_file is --train_file: dev scores (and the best-model choice) will be measured on "
             "training data")


def training_history(result, provenance: dict, stopped: str | None = None) -> dict:
    """training_history.json of a FitResult: how it was made (TrainingSetup.provenance), its
    evaluations and losses, and why training stopped early, if it did. JSON has no NaN: a
    non-finite loss is written as null."""
    losses = [(step, loss if math.isfinite(loss) else None) for step, loss in result.losses]
    history = {**provenance, "evaluations": result.evaluations, "losses": losses}
    if stopped:
        history["stopped"] = stopped
    return history


@dataclasses.dataclass
class SeedRuns:
    """What the seeds of a run ended with: each finished seed's best dev metrics, best-model
    directory and environment (what trained it), and why any seed stopped."""

    per_seed: dict[int, dict]
    best_dirs: dict[int, Path]
    stopped: dict[int, str]
    environments: dict[int, dict | None]


def initial_model_factory(backend_module, task: str, config: BertConfig, vocab: Path, rank0: bool
                          ) -> Callable[[], Any]:
    """A function that builds the run's initial model, the same weights on every call."""

    def initial_model():
        backend_module.seed_everything(FLAGS.init_seed)  # identical initial weights for every seed
        model, load_report = backend_module.create_model(task, config, FLAGS.init_checkpoint, vocab)
        if load_report and load_report.initialised and rank0:
            print(f"freshly initialised task head (not in the checkpoint): {', '.join(load_report.initialised)}")
        return model

    return initial_model


def prepare_output_dir(run: TrainingSetup) -> None:
    if run.rank0:
        run.out.mkdir(parents=True, exist_ok=True)
        remove_earlier_outputs(run.out, run.seeds_to_train, resume=FLAGS.resume)
        write_text(run.out / FLAGS_FILE, effective_flags(run.program, run.runner_module))


def train_seeds(run: TrainingSetup, task, train_arrays, evaluate_dev: Callable,
                predict_settings: tuple[str, dict]) -> SeedRuns:
    """Train every seed from the same initial weights; each keeps its best dev evaluation (by
    task.criterion).

    evaluate_dev(trainer) -> (predictions with .write(directory), metrics). The best evaluation's
    model, the settings predict mode needs (predict_settings: file name, values), predictions and
    scores are saved as one set in seed_<seed>/. A seed whose loss diverges stops alone. With
    --resume, the seeds the interrupted run finished are taken as they are."""
    runs = SeedRuns(dict(run.earlier.finished), {}, dict(run.earlier.stopped), dict(run.earlier.environments))
    for seed, metrics in run.earlier.finished.items():
        runs.best_dirs[seed] = seed_dir(run.out, seed) / BEST_MODEL_DIR
        if run.rank0:
            print(f"seed {seed}: finished in the interrupted run (--resume): best dev "
                  + ", ".join(f"{m} {metrics[m]:.3f}" for m in task.metric_names), flush=True)
    for seed, reason in run.earlier.stopped.items():
        if run.rank0:
            print(f"seed {seed}: stopped in the interrupted run (--resume), not trained again: {reason}", flush=True)
    for seed in run.seeds_to_train:
        directory = seed_dir(run.out, seed)
        model = run.first_model if seed == run.seeds_to_train[0] else run.initial_model()
        trainer = run.backend.Trainer(model, training_config(seed), FLAGS.task, log_dir=directory / "tensorboard",
                                      show_progress=FLAGS.progress, ctx=run.ctx)
        latest = {}

        def evaluate(trainer=trainer, latest=latest):
            latest["predictions"], metrics = evaluate_dev(trainer)
            return metrics

        def on_new_best(metrics, directory=directory, model=model, latest=latest):
            # the model, its settings, predictions and scores of one evaluation, replaced as a set:
            # a Ctrl-C never leaves a model beside another evaluation's predictions or scores
            with replaced_together(directory) as staging:
                run.backend.save_pretrained(model, staging / BEST_MODEL_DIR, run.vocab)
                write_json(staging / BEST_MODEL_DIR / predict_settings[0], predict_settings[1])
                latest["predictions"].write(staging)
                write_json(staging / EVAL_RESULTS_FILE, metrics)

        try:
            result = trainer.fit(train_arrays, evaluate=evaluate, criterion=task.criterion, on_new_best=on_new_best)
        except NonFiniteLossError as error:
            # a diverged seed stops alone: the others still run, and the report names it
            runs.stopped[seed] = str(error)
            if run.rank0:
                print(f"seed {seed}: stopped: {error}", file=sys.stderr, flush=True)
                if error.result is not None:
                    write_json(directory / HISTORY_FILE,
                               training_history(error.result, run.provenance, stopped=str(error)))
            continue
        if run.rank0:
            write_json(directory / HISTORY_FILE, training_history(result, run.provenance))
            print(f"seed {seed}: best dev at step {result.best_step}: "
                  + ", ".join(f"{m} {result.best_metrics[m]:.3f}" for m in task.metric_names), flush=True)
        runs.per_seed[seed] = result.best_metrics
        runs.best_dirs[seed] = directory / BEST_MODEL_DIR
        runs.environments[seed] = run.environment

    def in_seed_order(by_seed: dict) -> dict:  # as --seeds gives them: the report's order, and its tie-break
        return {seed: by_seed[seed] for seed in run.seeds if seed in by_seed}

    return SeedRuns(in_seed_order(runs.per_seed), in_seed_order(runs.best_dirs), in_seed_order(runs.stopped),
                    in_seed_order(runs.environments))


def write_report(runs: SeedRuns, task, run: TrainingSetup) -> int:
    """report.md / report.json with `mean (max)` over the finished seeds, what trained them and the
    evaluated examples that are training ones; returns the best seed (by task.criterion)."""
    if not runs.per_seed:
        raise TrainingStopped(f"every seed stopped before the end of training: {runs.stopped}")
    summary = summarize_seeds(runs.per_seed, task.metric_names)
    best_seed = max(runs.per_seed, key=lambda s: task.criterion(runs.per_seed[s]))
    summary["best_seed"] = best_seed
    summary["environments"] = {str(seed): runs.environments[seed] for seed in runs.per_seed}
    summary["seen_in_training"] = run.seen_in_training
    unseen = {seed: metrics["unseen"] for seed, metrics in runs.per_seed.items() if "unseen" in metrics}
    if unseen:
        # the metrics every seed has (a CJRC domain without unseen questions has none)
        names = [name for name in task.metric_names if all(name in scores for scores in unseen.values())]
        summary["unseen"] = {"examples": next(iter(unseen.values()))["examples"], **summarize_seeds(unseen, names)}
        without = [seed for seed in runs.per_seed if seed not in unseen]  # kept seeds of an older cnbert
        if without:
            summary["unseen"]["seeds_without"] = without
    if runs.stopped:
        summary["stopped_seeds"] = {str(seed): reason for seed, reason in runs.stopped.items()}
    if run.rank0:
        out = Path(FLAGS.output_dir)
        model_name = Path(FLAGS.init_checkpoint).name if FLAGS.init_checkpoint else "random init"
        markdown = format_markdown(summary, f"{task.title} dev ({model_name})")
        write_text(out / REPORT_FILES[0], markdown)
        write_json(out / REPORT_FILES[1], summary)
        print(markdown, flush=True)
    return best_seed


def score_test(run: TrainingSetup, model_dir: Path, evaluate_test: Callable, metric_names: Sequence[str]) -> None:
    """Score --test_file once with the best model: test/ holds its predictions and test_results.json.
    evaluate_test(trainer) -> (predictions with .write(directory), metrics)."""
    run.backend.barrier(run.ctx)  # rank 0 alone saves best_model: no process may read it before it is complete
    model = run.backend.load_finetuned(model_dir, FLAGS.task)
    trainer = run.backend.Trainer(model, training_config(0), FLAGS.task, show_progress=False, ctx=run.ctx)
    predictions, metrics = evaluate_test(trainer)
    if run.rank0:
        with replaced_together(run.out / TEST_DIR) as staging:
            predictions.write(staging)
            write_json(staging / TEST_RESULTS_FILE, {**metrics, "model_dir": str(model_dir)})
        print("test: " + ", ".join(f"{m} {metrics[m]:.3f}" for m in metric_names), flush=True)


def raise_if_stopped(runs: SeedRuns) -> None:
    if runs.stopped:
        raise TrainingStopped(f"seed(s) {', '.join(map(str, runs.stopped))} stopped before the end of training; "
                              f"the report covers the others")
