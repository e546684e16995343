"""`cnbert-mrc`: fine-tune and evaluate on CMRC 2018, DRCD or CJRC, or answer questions with a
fine-tuned model.

    cnbert-mrc --flagfile=flags/cmrc2018_roberta_wwm_ext_base.flags --init_checkpoint=/path/to/model
    torchrun --nproc_per_node=8 -m cnbert.runners.mrc --flagfile=...      # several GPUs / nodes
    cnbert-mrc --mode=predict --task=cmrc2018 --model_dir=runs/x/seed_123/best_model \
        --question=... --context=...

Training mode runs every seed in --seeds from the same initial weights, keeps each seed's best
dev evaluation (by F1 + EM), and writes report.md / report.json with `mean (max)` over seeds.
The flags every runner shares (model, training, output, framework) are cnbert.runners.common's.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import NamedTuple

from absl import app, flags

from cnbert import command_line
from cnbert.data import FeatureConfig, build_features, postprocess_predictions
from cnbert.errors import DataError
from cnbert.io_utils import read_json_file, write_json
from cnbert.runners import common, prediction, run_dir, training_run
from cnbert.tasks import mrc as tasks

FLAGS = flags.FLAGS
log = logging.getLogger("cnbert.mrc")
PROGRAM = "cnbert-mrc"

flags.adopt_module_key_flags(common)
flags.DEFINE_enum("task", None, sorted(tasks.TASKS), "Reading-comprehension task.")
flags.DEFINE_float("cjrc_dev_fraction", None, "cjrc only: train on the passages of --train_file not held out and "
                   "evaluate on this fraction of its passages (the original list used 0.1); --dev_file must then be "
                   "the same file.")
flags.DEFINE_integer("max_seq_length", 512, "Tokens per window, [CLS] question [SEP] passage [SEP].")
flags.DEFINE_integer("doc_stride", 128, "Word pieces between the starts of consecutive windows.")
flags.DEFINE_integer("max_query_length", 64, "Question word pieces kept.")
flags.DEFINE_integer("max_answer_length", 50, "Longest answer, in word pieces.")
flags.DEFINE_integer("n_best_size", 20, "Candidates per question in nbest_predictions.json.")
flags.DEFINE_float("null_score_threshold", 0.0, "cjrc: answer unknown when the null score beats the best answer by more than this.")
# predict mode
flags.DEFINE_string("question", None, "predict: one question (with --context).")
flags.DEFINE_string("context", None, "predict: the passage for --question.")

# Saved beside each best model, so that predict mode cuts and decodes as the training run did.
PREDICT_SETTINGS = ("max_seq_length", "doc_stride", "max_query_length", "max_answer_length", "do_lower_case",
                    "fullwidth_to_halfwidth", "n_best_size", "null_score_threshold")
PREDICT_SETTINGS_FILE = "cnbert_mrc_settings.json"
# Only cjrc has unanswerable questions, so only its decoding compares the null score.
NULL_SCORE_TASKS = ("cjrc",)
# the tasks whose model classifies (CJRC's answer class) besides finding spans
CLASS_HEAD_TASKS = tuple(name for name, task in tasks.TASKS.items() if task.answer_classes)
TOKEN_TYPES_NEEDED = "reading comprehension needs token types 0 (question) and 1 (passage)"


def _feature_config() -> FeatureConfig:
    try:
        return FeatureConfig(max_seq_length=FLAGS.max_seq_length, max_query_length=FLAGS.max_query_length,
                             doc_stride=FLAGS.doc_stride)
    except ValueError as e:
        # the settings file is named only for the values the failed check read (its message names them)
        checked = [name for name in ("max_seq_length", "max_query_length", "doc_stride") if name in str(e)]
        raise app.UsageError(f"{e}{prediction.value_origin(*checked)}") from None


def _check_decoding_flags() -> None:
    for name in ("n_best_size", "max_answer_length"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1, got {getattr(FLAGS, name)}{prediction.value_origin(name)}")


def _check_flag_combinations() -> None:
    """Refuse flags this run would silently ignore: a user who passes them expects them to act."""
    common.check_flag_combinations(train_only=("cjrc_dev_fraction",), predict_only=("question", "context"),
                                   single_prints="print the answer")
    # a value other than the default: a run's flags.txt names every flag, and must work as a flag file
    if FLAGS.null_score_threshold != FLAGS["null_score_threshold"].default and FLAGS.task not in NULL_SCORE_TASKS:
        raise app.UsageError(f"--null_score_threshold applies to tasks with unanswerable questions "
                             f"({', '.join(NULL_SCORE_TASKS)}), and --task={FLAGS.task} has none")
    if FLAGS.classifier_dropout is not None and FLAGS.task not in CLASS_HEAD_TASKS:
        raise app.UsageError(f"--classifier_dropout applies to a classification head ({', '.join(CLASS_HEAD_TASKS)}'s "
                             f"answer class), and --task={FLAGS.task}'s span head has none")


def _single_question() -> bool:
    """Predict mode answers one --question about one --context (printed), not a --predict_file."""
    return FLAGS.question is not None or FLAGS.context is not None


# ---- data ------------------------------------------------------------------------------------

def _load_splits(task: tasks.MrcTask):
    """(train examples, dev examples, dev gold JSON restricted to dev, dev gold path)."""
    train_result = task.read(FLAGS.train_file)  # readers log their repair / consistency report
    if FLAGS.cjrc_dev_fraction is not None:
        try:
            train, dev = tasks.split_by_passage(train_result.examples, FLAGS.cjrc_dev_fraction)
        except ValueError as e:  # the fraction is checked before: the file has too few passages
            raise DataError(FLAGS.train_file, "", f"--cjrc_dev_fraction splits the file by passage, and it has {e}"
                            ) from None
        gold_path = FLAGS.train_file
    else:
        dev_result = task.read(FLAGS.dev_file)
        train, dev, gold_path = train_result.examples, dev_result.examples, FLAGS.dev_file
    gold = tasks.restrict_gold(read_json_file(gold_path), {e.qas_id for e in dev})
    return train, dev, gold, gold_path


def _predict_examples(trainer, examples, features, task_name, gold=None, gold_path=None, unseen=None):
    """(predictions, metrics): metrics against `gold` when given; with `unseen` (a training run's
    indices of the questions it did not train on), their scores too."""
    outputs = trainer.predict(features.model_arrays())
    predictions = postprocess_predictions(
        examples, features, outputs["start_logits"], outputs["end_logits"], class_logits=outputs.get("class_logits"),
        n_best_size=FLAGS.n_best_size, max_answer_length=FLAGS.max_answer_length,
        null_score_threshold=FLAGS.null_score_threshold)
    predictions = dataclasses.replace(predictions, answers_as_list=tasks.get_task(task_name).predictions_as_list)
    metrics = tasks.score(task_name, gold, predictions.answers, source=gold_path) if gold is not None else None

    def score_questions(rows):
        ids = {examples[i].qas_id for i in rows}
        answers = {qas_id: answer for qas_id, answer in predictions.answers.items() if qas_id in ids}
        scores = tasks.score(task_name, tasks.restrict_gold(gold, ids), answers, source=gold_path)
        # a CJRC domain none of these questions is in has no scores (the scorer would give it 0)
        return {name: value for name, value in scores.items() if scores.get(f"{name.split('_')[0]}_TOTAL") != 0}

    return predictions, training_run.with_unseen_scores(metrics, unseen, score_questions)


# ---- training ----------------------------------------------------------------------------------

def train_and_evaluate():
    task = tasks.get_task(FLAGS.task)
    common.require_file("train_file")
    if FLAGS.cjrc_dev_fraction is not None:
        if not 0 < FLAGS.cjrc_dev_fraction < 1:
            raise app.UsageError(f"--cjrc_dev_fraction must be in (0, 1), got {FLAGS.cjrc_dev_fraction}")
        if FLAGS.task != "cjrc":
            raise app.UsageError("--cjrc_dev_fraction applies to --task=cjrc only")
        if FLAGS.dev_file and Path(FLAGS.dev_file).resolve() != Path(FLAGS.train_file).resolve():
            raise app.UsageError("with --cjrc_dev_fraction, dev questions come from --train_file; drop --dev_file or make it the same file")
    else:
        common.require_file("dev_file")
        training_run.warn_if_dev_is_train()
    _check_decoding_flags()
    feature_config = _feature_config()
    run = training_run.start_training(PROGRAM, __name__, task, 2, TOKEN_TYPES_NEEDED)
    tokenizer = run.tokenizer
    train_examples, dev_examples, dev_gold, gold_path = _load_splits(task)
    train_features = build_features(train_examples, tokenizer, feature_config, training=True,
                                    answer_classes=task.answer_classes)
    if len(train_features) == 0:
        raise DataError(FLAGS.train_file, "", "no training features: no question has an answer that could be "
                                              "located in its passage (see the warnings above)")
    dev_features = _features_to_answer(dev_examples, tokenizer, feature_config, gold_path)
    log.info("%d train questions -> %d features; %d dev questions -> %d features", len(train_examples),
             len(train_features), len(dev_examples), len(dev_features))
    test = _read_test_split(task, tokenizer, feature_config) if FLAGS.do_predict else None
    training_run.check_examples(run, {"train": train_examples, "dev": dev_examples,
                                      **({"test": test.examples} if test else {})}, tasks.seen_key)
    training_run.check_enough_features(len(train_features), run.ctx.world_size)
    training_run.prepare_output_dir(run)
    if FLAGS.cjrc_dev_fraction is not None and run.rank0:
        write_json(run.out / run_dir.DEV_GOLD_FILE, dev_gold)

    def evaluate_dev(trainer):
        return _predict_examples(trainer, dev_examples, dev_features, FLAGS.task, dev_gold, gold_path,
                                 run.unseen.get("dev"))

    def evaluate_test(trainer):
        return _predict_examples(trainer, test.examples, test.features, FLAGS.task, test.gold, FLAGS.test_file,
                                 run.unseen.get("test"))

    # the settings name the task, so that predict mode refuses the model for another task (a DRCD
    # model reads simplified text)
    training_run.train_report_and_test(run, task, train_features.model_arrays(), evaluate_dev,
                                       evaluate_test if FLAGS.do_predict else None,
                                       PREDICT_SETTINGS_FILE, PREDICT_SETTINGS)


class TestSplit(NamedTuple):
    examples: list
    features: object
    gold: dict


def _read_test_split(task, tokenizer, feature_config) -> TestSplit:
    examples = task.read(FLAGS.test_file).examples  # labelled: it is scored
    features = _features_to_answer(examples, tokenizer, feature_config, FLAGS.test_file)
    return TestSplit(examples, features, read_json_file(FLAGS.test_file))


def _features_to_answer(examples, tokenizer, feature_config, source):
    """The windows of questions to answer; refused when there are none (every passage was empty
    to the tokenizer, e.g. spaces or zero-width characters), before any training is spent."""
    features = build_features(examples, tokenizer, feature_config, training=False)
    if len(features) == 0:
        raise DataError(source, "", f"nothing to answer from: no passage of its {len(examples)} questions has text "
                                    "the tokenizer keeps")
    return features


# ---- predict mode ------------------------------------------------------------------------------

def predict():
    task = tasks.get_task(FLAGS.task)
    single = _single_question()
    prediction.start_prediction(single, "both --question and --context", "predictions.json", PREDICT_SETTINGS_FILE,
                                PREDICT_SETTINGS)
    if single and not (FLAGS.question and FLAGS.context):
        raise app.UsageError("--question and --context go together and must not be empty")
    setup = prediction.load_for_prediction(2, TOKEN_TYPES_NEEDED, check_flags=_check_decoding_flags)
    if single:
        examples = [task.question_example(FLAGS.question, FLAGS.context)]
    else:
        examples = task.read(FLAGS.predict_file, labelled=False).examples  # answers, if any, are not needed
    features = _features_to_answer(examples, setup.tokenizer, _feature_config(), FLAGS.predict_file or "--context")
    predictions, _ = _predict_examples(setup.trainer(), examples, features, FLAGS.task)
    if not setup.ctx.is_main:  # under torchrun every process predicts; one prints and writes
        return
    if single:
        print(json.dumps({"question": FLAGS.question, "answer": predictions.answers["question"]}, ensure_ascii=False))
    else:
        with prediction.replaced_prediction_set() as staging:  # the answers and their n-best lists, as one set
            paths = [Path(FLAGS.output_dir) / path.name for path in predictions.write(staging)]
        print(f"wrote {', '.join(map(str, paths[:-1]))} and {paths[-1]} ({len(examples)} questions)")


def main(argv):
    def body():
        _check_flag_combinations()
        predict() if FLAGS.mode == "predict" else train_and_evaluate()

    return common.run_main(PROGRAM, argv, body)


def run():
    command_line.run(PROGRAM, main)


if __name__ == "__main__":
    run()
