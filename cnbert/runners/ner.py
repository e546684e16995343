"""`cnbert-ner`: fine-tune and evaluate a character tagger (MSRA NER), or tag text with a fine-tuned one.

    cnbert-ner --task=msra_ner --init_checkpoint=/path/to/model --train_file=$CNBERT_DATA/msra_ner/msra_train_bio \
        --dev_file=$CNBERT_DATA/msra_ner/msra_test_bio.txt --output_dir=runs/msra
    cnbert-ner --mode=predict --task=msra_ner --model_dir=runs/msra/seed_123/best_model --text=...

Training mode runs every seed in --seeds from the same initial weights, keeps each seed's best
dev evaluation (by entity F1), and writes report.md / report.json with `mean (max)` over seeds.
The flags every runner shares (model, training, output, framework) are cnbert.runners.common's.
"""
from __future__ import annotations

import json
import logging

import numpy as np
from absl import app, flags

from cnbert import command_line
from cnbert.data.ner import NerSentence, build_ner_features, decode_tags, default_doc_stride, entities
from cnbert.runners import common, prediction, training_run
from cnbert.tasks import ner as tasks

FLAGS = flags.FLAGS
log = logging.getLogger("cnbert.ner")
PROGRAM = "cnbert-ner"

flags.adopt_module_key_flags(common)
flags.DEFINE_enum("task", None, sorted(tasks.TASKS), "NER task.")
flags.DEFINE_integer("max_seq_length", 256, "Tokens per window with [CLS] and [SEP], one per character; a longer "
                     "sentence is tagged in overlapping windows (--doc_stride).")
flags.DEFINE_integer("doc_stride", None, "Characters between the starts of a long sentence's windows, at most "
                     "--max_seq_length - 2 (default: half a window, (max_seq_length - 2) // 2); each character is "
                     "predicted from the window where it has the most context.")
# predict mode
flags.DEFINE_string("text", None, "predict: one text to tag (its entities are printed).")

# Saved beside each best model (with the task), so that predict mode windows text as the training run did.
PREDICT_SETTINGS = ("max_seq_length", "doc_stride", "do_lower_case", "fullwidth_to_halfwidth")
PREDICT_SETTINGS_FILE = "cnbert_ner_settings.json"
TOKEN_TYPES = (1, "tagging a text needs token type 0")


def _check_flag_combinations() -> None:
    common.check_flag_combinations(predict_only=("text",), single_prints="print the entities")
    if FLAGS.max_seq_length < 3:
        raise app.UsageError(f"--max_seq_length must be at least 3, got {FLAGS.max_seq_length}")
    if FLAGS.mode == "train":
        _resolve_doc_stride()  # predict mode may yet take both from the training run's settings


def _resolve_doc_stride() -> None:
    """--doc_stride, defaulting to half a window, checked against --max_seq_length as it stands after
    predict mode took the training run's settings; the resolved value is what a training run saves."""
    span = FLAGS.max_seq_length - 2
    if FLAGS.doc_stride is None:
        FLAGS.doc_stride = default_doc_stride(FLAGS.max_seq_length)
    if not 1 <= FLAGS.doc_stride <= span:
        raise app.UsageError(f"--doc_stride must be between 1 and --max_seq_length - 2 = {span} (larger steps would "
                             f"skip characters), got {FLAGS.doc_stride}"
                             # below 1 is wrong whatever the window; above the bound, the window may be the file's
                             f"{prediction.value_origin('doc_stride', *(['max_seq_length'] if FLAGS.doc_stride >= 1 else []))}")


def _featurise(task, sentences, tokenizer, source: str):
    features = build_ner_features(sentences, tokenizer, FLAGS.max_seq_length, task.labels, FLAGS.doc_stride)
    long_sentences = {int(i) for i in features.sentence_index[features.char_start > 0]}
    if long_sentences:
        windows = int(np.isin(features.sentence_index, list(long_sentences)).sum())
        log.info("%s: %d sentences longer than %d characters are tagged in %d windows starting %d characters apart",
                 source, len(long_sentences), FLAGS.max_seq_length - 2, windows, FLAGS.doc_stride)
    return features


def _predict(trainer, task, sentences, features, unseen=None):
    """(predictions, metrics): metrics when every sentence is tagged, else None; with `unseen` (a
    training run's indices of the sentences it did not train on), their scores too."""
    predicted = decode_tags(sentences, features, trainer.predict(features.model_arrays())["logits"], task.labels)
    metrics = tasks.score(sentences, predicted) if features.tags is not None else None
    metrics = training_run.with_unseen_scores(
        metrics, unseen, lambda rows: tasks.score([sentences[i] for i in rows], [predicted[i] for i in rows]))
    return tasks.NerPredictions(sentences, predicted), metrics


# ---- training ----------------------------------------------------------------------------------

def train_and_evaluate():
    task = tasks.get_task(FLAGS.task)

    def featurise(sentences, tokenizer, path):
        return _featurise(task, sentences, tokenizer, path)

    def evaluate(trainer, sentences, features, path, unseen):
        return _predict(trainer, task, sentences, features, unseen)

    training_run.train_on_files(PROGRAM, __name__, task, *TOKEN_TYPES, read=task.read, featurise=featurise,
                                evaluate=evaluate, settings_file=PREDICT_SETTINGS_FILE, settings_names=PREDICT_SETTINGS,
                                seen_key=tasks.seen_key)


# ---- predict mode ------------------------------------------------------------------------------

def predict():
    task = tasks.get_task(FLAGS.task)
    single = FLAGS.text is not None
    settings = PREDICT_SETTINGS
    if FLAGS["max_seq_length"].present and not FLAGS["doc_stride"].present:
        # a window length of one's own takes the default stride for it, not the training run's
        settings = tuple(name for name in PREDICT_SETTINGS if name != "doc_stride")
    prediction.start_prediction(single, "--text", tasks.PREDICTIONS_FILE, PREDICT_SETTINGS_FILE, settings)
    _resolve_doc_stride()  # with the training run's settings taken, before the model loads
    if single and not FLAGS.text.strip():
        raise app.UsageError("--text must not be empty")
    setup = prediction.load_for_prediction(*TOKEN_TYPES)
    if single:
        sentences = [NerSentence("text", tuple(FLAGS.text), None)]
    else:
        sentences = task.read(FLAGS.predict_file, tagged=False)  # tags, if the file has them, are scored too
    features = _featurise(task, sentences, setup.tokenizer, FLAGS.predict_file or "--text")
    predictions, metrics = _predict(setup.trainer(), task, sentences, features)
    if not setup.ctx.is_main:  # under torchrun every process predicts; one prints and writes
        return
    if single:
        found = sorted(entities(predictions.predicted[0]))
        print(json.dumps({"entities": [{"text": FLAGS.text[start:end], "type": kind, "start": start, "end": end}
                                       for start, end, kind in found]}, ensure_ascii=False))
        return
    path = prediction.write_predictions(predictions, metrics)
    print(f"wrote {path} and {path.with_name(prediction.PREDICT_RESULTS_FILE)} ({len(sentences)} sentences)")
    if metrics is not None:
        print(", ".join(f"entity {name} {metrics[name]:.3f}" for name in task.metric_names)
              + f" on the tags in {FLAGS.predict_file}")


def main(argv):
    def body():
        _check_flag_combinations()
        predict() if FLAGS.mode == "predict" else train_and_evaluate()

    return common.run_main(PROGRAM, argv, body)


def run():
    command_line.run(PROGRAM, main)


if __name__ == "__main__":
    run()
