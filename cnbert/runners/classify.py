"""`cnbert-classify`: fine-tune and evaluate a sentence classifier (ChnSentiCorp, THUCNews), a
sentence-pair matcher (LCQMC, XNLI) or an answer selector (NLPCC DBQA), or label texts with a
fine-tuned one.

    cnbert-classify --task=lcqmc --init_checkpoint=/path/to/model --train_file=$CNBERT_DATA/lcqmc/lcqmc_train.tsv \
        --dev_file=$CNBERT_DATA/lcqmc/lcqmc_dev.tsv --output_dir=runs/lcqmc
    cnbert-classify --mode=predict --task=lcqmc --model_dir=runs/lcqmc/seed_123/best_model \
        --text_a=... --text_b=...

Training mode runs every seed in --seeds from the same initial weights, keeps each seed's best
dev evaluation (by accuracy; MRR + MAP for DBQA), and writes report.md / report.json with `mean (max)` over seeds.
The flags every runner shares (model, training, output, framework) are cnbert.runners.common's.
"""
from __future__ import annotations

import dataclasses
import json
import logging

from absl import app, flags

from cnbert import command_line
from cnbert.data.classification import ClassificationExample, build_classification_features
from cnbert.runners import common, prediction, training_run
from cnbert.tasks import classification as tasks

FLAGS = flags.FLAGS
log = logging.getLogger("cnbert.classify")
PROGRAM = "cnbert-classify"

flags.adopt_module_key_flags(common)
flags.DEFINE_enum("task", None, sorted(tasks.TASKS), "Classification or matching task.")
flags.DEFINE_integer("max_seq_length", 128, "Word pieces per example with [CLS] and [SEP]; longer texts are cut, "
                     "a piece at a time off the longer text of a pair.")
# predict mode
flags.DEFINE_string("text_a", None, "predict: one text to label (the first of a pair).")
flags.DEFINE_string("text_b", None, "predict: the second text of the pair (matching tasks).")

# Saved beside each best model (with the task), so that predict mode cuts texts as the training run did.
PREDICT_SETTINGS = ("max_seq_length", "do_lower_case", "fullwidth_to_halfwidth")
PREDICT_SETTINGS_FILE = "cnbert_classify_settings.json"


def _token_types(task: tasks.ClassificationTask) -> tuple[int, str]:
    if task.pairs:
        return 2, f"{task.title} pairs need token types 0 (first text) and 1 (second text)"
    return 1, "a single text needs token type 0"


def _check_flag_combinations() -> None:
    common.check_flag_combinations(predict_only=("text_a", "text_b"), single_prints="print the label")
    _check_max_seq_length()


def _check_max_seq_length() -> None:
    """Run again in predict mode once --max_seq_length may have come from the training settings."""
    if FLAGS.max_seq_length < 8:
        raise app.UsageError(f"--max_seq_length must be at least 8, got {FLAGS.max_seq_length}"
                             f"{prediction.value_origin('max_seq_length')}")


def _single_example() -> bool:
    return FLAGS.text_a is not None or FLAGS.text_b is not None


def _featurise(task, examples, tokenizer, source: str):
    features = build_classification_features(examples, tokenizer, FLAGS.max_seq_length, task.labels)
    if features.num_truncated:
        log.info("%s: %d of %d examples cut to --max_seq_length=%d word pieces", source, features.num_truncated,
                 len(examples), FLAGS.max_seq_length)
    return features


def _predict(trainer, task, examples, features, scored=None, left_out=(), unseen=None):
    """(predictions, metrics): the metrics of the examples at the indices `scored` (default: all of
    them when every example is labelled), None when there are none; `left_out` (lines the reader left
    out, file:line) is recorded with the metrics; with `unseen` (a training run's indices of the
    examples it did not train on), their scores too (training_run.with_unseen_scores)."""
    logits = trainer.predict(features.model_arrays())["logits"]
    predictions = tasks.ClassificationPredictions(examples, task.labels, logits)
    if scored is None:
        scored = range(len(examples)) if features.labels is not None else []
    scored = list(scored)
    metrics = tasks.score(task, [examples[i] for i in scored], logits[scored]) if scored else None
    if metrics is not None and left_out:
        metrics["left_out"] = list(left_out)
    metrics = training_run.with_unseen_scores(
        metrics, unseen, lambda rows: tasks.score(task, [examples[i] for i in rows], logits[rows]))
    return predictions, metrics


# ---- training ----------------------------------------------------------------------------------

def train_and_evaluate():
    task = tasks.get_task(FLAGS.task)
    left_out = {}  # path -> the lines (DBQA) its reader left out: recorded with the file's scores

    def read(path):
        left_out[path] = []
        examples = task.read(path, left_out=left_out[path])
        tasks.check_scorable(task, examples, path)
        return examples

    def evaluate(trainer, examples, features, path, unseen):
        # a ranking task's scores over some of a question's candidates would rank another list
        return _predict(trainer, task, examples, features, left_out=left_out[path],
                        unseen=None if task.ranking else unseen)

    training_run.train_on_files(PROGRAM, __name__, task, *_token_types(task), read=read,
                                featurise=lambda examples, tokenizer, path: _featurise(task, examples, tokenizer, path),
                                evaluate=evaluate, settings_file=PREDICT_SETTINGS_FILE,
                                settings_names=PREDICT_SETTINGS, seen_key=tasks.seen_key)


# ---- predict mode ------------------------------------------------------------------------------

def predict():
    task = tasks.get_task(FLAGS.task)
    single = _single_example()
    prediction.start_prediction(single, "--text_a (and --text_b for a pair)", tasks.PREDICTIONS_FILE,
                                PREDICT_SETTINGS_FILE, PREDICT_SETTINGS)
    if single and (not FLAGS.text_a or bool(FLAGS.text_b) != task.pairs):
        raise app.UsageError(f"--task={FLAGS.task} labels " + ("a pair: pass --text_a and --text_b" if task.pairs
                                                               else "one text: pass --text_a only") + ", not empty")
    setup = prediction.load_for_prediction(*_token_types(task), check_flags=_check_max_seq_length)
    scored, left_out = [], []  # the examples whose labels are scored; those left out of the score
    if single:
        examples = [ClassificationExample("text", FLAGS.text_a, FLAGS.text_b, None)]
    else:
        examples = task.read(FLAGS.predict_file, labelled=False)  # labels, if the file has them, are scored too
        scored = [i for i, e in enumerate(examples) if e.label is not None]
        left_out = [e.guid for e in examples if e.label is None] if scored else []
        if left_out:
            # (DBQA) lines whose label is not the task's: predicted, and left out of the score as training does
            common.note(f"{FLAGS.predict_file}: {len(examples) - len(scored)} of {len(examples)} lines have labels "
                        "outside the task's (see above): they are predicted but not scored")
        if scored and not tasks.scorable(task, [examples[i] for i in scored]):
            common.note(f"the labels in {FLAGS.predict_file} cannot be scored: no candidate is labelled "
                        f"{task.labels[-1]!r}; writing predictions only")
            scored = []
    unlabelled = [dataclasses.replace(e, label=None) for e in examples]  # scoring reads `examples`
    features = _featurise(task, unlabelled, setup.tokenizer, FLAGS.predict_file or "--text_a")
    predictions, metrics = _predict(setup.trainer(), task, examples, features, scored, left_out)
    if not setup.ctx.is_main:  # under torchrun every process predicts; one prints and writes
        return
    if single:
        probabilities = dict(zip(task.labels, predictions.probabilities[0].round(6).tolist()))
        print(json.dumps({"label": predictions.predicted[0], "probabilities": probabilities}, ensure_ascii=False))
        return
    path = prediction.write_predictions(predictions, metrics)
    print(f"wrote {path} and {path.with_name(prediction.PREDICT_RESULTS_FILE)} ({len(examples)} examples)")
    if metrics is not None:
        print(", ".join(f"{name} {metrics[name]:.3f}" for name in task.metric_names)
              + f" on the labels in {FLAGS.predict_file}")


def main(argv):
    def body():
        _check_flag_combinations()
        predict() if FLAGS.mode == "predict" else train_and_evaluate()

    return common.run_main(PROGRAM, argv, body)


def run():
    command_line.run(PROGRAM, main)


if __name__ == "__main__":
    run()
