"""`cnbert-score`: score a predictions file with the official CMRC 2018 / DRCD or CJRC metric.

    cnbert-score --task=cmrc2018 --data_file=cmrc2018_dev.json --predictions_file=predictions.json

Prints one JSON object: for cmrc2018 / drcd the official record (AVERAGE, F1, EM as "%.3f"
strings, TOTAL, SKIP, FILE), for cjrc {"civil", "criminal", "overall"} with em / f1 to one decimal
and the question counts. Bad input exits with status 1 and a message naming the file and entry,
bad flags with status 2.
"""
import json
import os
import sys

from absl import flags

from cnbert import command_line
from cnbert.errors import DataError
from cnbert.eval.cjrc_metric import evaluate_cjrc, format_cjrc_scores
from cnbert.eval.cmrc_metric import evaluate_cmrc, format_cmrc_scores, prediction_key
from cnbert.eval.predictions import load_predictions, read_gold_questions
from cnbert.io_utils import read_json_file

PROGRAM = "cnbert-score"
TASKS = ("cmrc2018", "drcd", "cjrc")

FLAGS = flags.FLAGS
flags.DEFINE_enum("task", None, TASKS, "Which official scorer to use (drcd uses the CMRC 2018 one).")
flags.DEFINE_string("data_file", None, "Gold file in SQuAD-style JSON (for drcd: the original "
                    "traditional-Chinese DRCD file).")
flags.DEFINE_string("predictions_file", None, 'Predictions: a JSON object {id: answer}; for cjrc '
                    'also the official list [{"id": ..., "answer": ...}].')
flags.mark_flags_as_required(["task", "data_file", "predictions_file"])
for _name in ("data_file", "predictions_file"):
    flags.register_validator(_name, lambda path: path is None or os.path.isfile(path),
                             message=f"--{_name} must name an existing file")


def score(task, data_file, predictions_file):
    """The JSON-ready report for `task`; warnings about unmatched ids go to stderr."""
    gold_data = read_json_file(data_file)
    predictions = load_predictions(predictions_file, allow_list=(task == "cjrc"))
    if task == "cjrc":
        scores = format_cjrc_scores(evaluate_cjrc(gold_data, predictions, source=data_file))
    else:
        scores = format_cmrc_scores(evaluate_cmrc(gold_data, predictions, source=data_file),
                                    predictions_file)
    # the CJRC scorer looks gold ids up as they are, the CMRC 2018 one stripped of spaces
    key = (lambda question_id: question_id) if task == "cjrc" else prediction_key
    _warn_unmatched(read_gold_questions(gold_data, data_file), predictions, key)
    return scores


def _warn_unmatched(questions, predictions, key):
    # Neither case is an error for the official scorers, but both usually mean the wrong file.
    gold_keys = {key(question.id) for question in questions}
    missing = [question.id for question in questions if key(question.id) not in predictions]
    extra = [question_id for question_id in predictions if question_id not in gold_keys]
    for count, what, examples in ((len(missing), "gold questions have no prediction (scored 0)", missing),
                                  (len(extra), "predictions match no gold question (ignored)", extra)):
        if count:
            # quoted where spaces around an id would otherwise be invisible
            shown = ", ".join(question_id if question_id == question_id.strip() else repr(question_id)
                              for question_id in examples[:5]) + (", ..." if count > 5 else "")
            print(f"{PROGRAM}: warning: {count} {what}: {shown}", file=sys.stderr)


def main(argv):
    if len(argv) > 1:
        command_line.print_usage_error(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
        return command_line.EXIT_USAGE
    try:
        report = score(FLAGS.task, FLAGS.data_file, FLAGS.predictions_file)
    except DataError as e:
        print(f"{PROGRAM}: error: {e}", file=sys.stderr)
        return command_line.EXIT_FAILED
    print(json.dumps(report))  # default escaping, as the official CMRC scorer prints
    return 0


def run():
    command_line.run(PROGRAM, main)


if __name__ == "__main__":
    run()
