"""Sentence classification and matching tasks (ChnSentiCorp, THUCNews articles and headlines, LCQMC,
XNLI, NLPCC DBQA):
each task's file format, its labels (their order fixes the classifier's output indices), and its
scores.

Classification and matching are scored by accuracy. DBQA (answer selection) ranks each question's
candidate sentences by the probability of label 1 and is scored by MRR and MAP, with pair accuracy
and the F1 of label 1 beside them. The best evaluation of a run is the one with the highest
`task.criterion` (ties keep the earlier): accuracy, or for DBQA MRR + MAP of the same evaluation.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cnbert.data.classification import ClassificationExample, TsvFormat, read_classification_tsv
from cnbert.errors import DataError
from cnbert.io_utils import write_text


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    name: str
    title: str
    labels: tuple[str, ...]
    format: TsvFormat
    ranking: bool = False  # answer selection: candidates of one question (text_a) are ranked by p(label 1)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def pairs(self) -> bool:
        """Whether an example is a text pair ([CLS] a [SEP] b [SEP])."""
        return self.format.text_b is not None

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics the multi-seed report shows."""
        return ("MRR", "MAP", "accuracy", "F1") if self.ranking else ("accuracy",)

    def criterion(self, metrics: Mapping) -> float:
        """The one number that ranks evaluations: accuracy, or MRR + MAP for answer selection."""
        if self.ranking:
            return float(metrics["MRR"]) + float(metrics["MAP"])
        return float(metrics["accuracy"])

    def read(self, path, labelled: bool = True, left_out: list | None = None) -> list[ClassificationExample]:
        return read_classification_tsv(path, self.format, self.labels, labelled=labelled, left_out=left_out)


TASKS = {
    # header `label text_a`; 0 negative, 1 positive
    "chnsenticorp": ClassificationTask("chnsenticorp", "ChnSentiCorp", ("0", "1"),
                                       TsvFormat(text_a="text_a", label="label")),
    # header `text_a text_b label`; 1: the two questions ask the same thing
    "lcqmc": ClassificationTask("lcqmc", "LCQMC", ("0", "1"),
                                TsvFormat(text_a="text_a", text_b="text_b", label="label")),
    # header `text_a text_b label` (premise, hypothesis); labels in Google BERT's XnliProcessor order
    "xnli": ClassificationTask("xnli", "XNLI (zh)", ("contradiction", "entailment", "neutral"),
                               TsvFormat(text_a="text_a", text_b="text_b", label="label")),
    # the common cnews release: `label \t text`, no header; its ten classes in cnews' own order
    "thucnews": ClassificationTask("thucnews", "THUCNews",
                                   ("体育", "财经", "房产", "家居", "教育", "科技", "时尚", "时政", "游戏", "娱乐"),
                                   TsvFormat(text_a="text_a", label="label", header=False,
                                             columns=("label", "text_a"))),
    # THUCNews headlines (the titles release): `title \t label id`, no header; ids 0-9 name, in its
    # class.txt, finance realty stocks education science society politics sports game entertainment
    "thucnews_titles": ClassificationTask("thucnews_titles", "THUCNews headlines", tuple(str(i) for i in range(10)),
                                          TsvFormat(text_a="text_a", label="label", header=False,
                                                    columns=("text_a", "label"))),
    # NLPCC 2017 DBQA: `label \t question \t sentence`, no header, a question's candidates on adjacent
    # lines; 1: the sentence answers the question. Dev line 2549's label `10` is reported and left out.
    "dbqa": ClassificationTask("dbqa", "NLPCC DBQA", ("0", "1"),
                               TsvFormat(text_a="text_a", text_b="text_b", label="label", header=False,
                                         columns=("label", "text_a", "text_b"), bad_labels="skip"),
                               ranking=True),
}


def get_task(name: str) -> ClassificationTask:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown classification task {name!r}; expected one of {sorted(TASKS)}") from None


def seen_key(example: ClassificationExample) -> tuple[str, ...]:
    """What makes an evaluated example a training one (runners' seen_in_training): its text as the
    file gives it, a pair's two texts in either order (LCQMC's pairs are symmetric, and a swapped
    XNLI or DBQA pair still shows the model both texts), whatever its label."""
    return (example.text_a,) if example.text_b is None else tuple(sorted((example.text_a, example.text_b)))


def score(task: ClassificationTask, examples: Sequence[ClassificationExample], logits: np.ndarray) -> dict:
    """The task's metrics (×100, unrounded) for labelled examples and their logits [n, num_labels]:
    "accuracy" (% of examples whose highest logit is their label), "total" (examples) and
    "per_label" ({label: {"gold", "predicted", "correct"}}); for answer selection also "MRR",
    "MAP", "F1" (of label 1) and "questions" (those ranked: with at least one answer)."""
    logits = np.asarray(logits)
    if logits.shape != (len(examples), task.num_labels):
        raise ValueError(f"logits have shape {logits.shape}, expected ({len(examples)}, {task.num_labels})")
    unlabelled = next((e.guid for e in examples if e.label is None), None)
    if unlabelled is not None:
        raise ValueError(f"example {unlabelled} has no label to score against")
    if not examples:
        raise ValueError("no examples to score")
    gold = np.array([task.labels.index(e.label) for e in examples])
    predicted = logits.argmax(axis=1)
    correct = gold == predicted
    per_label = {label: {"gold": int((gold == i).sum()), "predicted": int((predicted == i).sum()),
                         "correct": int(correct[gold == i].sum())} for i, label in enumerate(task.labels)}
    metrics = {"accuracy": 100.0 * float(correct.mean()), "total": len(examples), "per_label": per_label}
    if task.ranking:
        metrics.update(ranking_scores([e.text_a for e in examples], gold == 1, logits[:, 1] - logits[:, 0]))
        positive = per_label[task.labels[1]]
        precision = positive["correct"] / positive["predicted"] if positive["predicted"] else 0.0
        recall = positive["correct"] / positive["gold"] if positive["gold"] else 0.0
        metrics["F1"] = 100.0 * (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return metrics


def scorable(task: ClassificationTask, examples: Sequence[ClassificationExample]) -> bool:
    """Whether labelled examples can be scored: answer selection needs a candidate labelled 1 (MRR
    and MAP rank those)."""
    return not task.ranking or any(e.label == task.labels[1] for e in examples)


def check_scorable(task: ClassificationTask, examples: Sequence[ClassificationExample], source) -> None:
    """Raise DataError naming `source` when its labelled examples cannot be scored (checked before
    hours of training, not at the first evaluation)."""
    if not scorable(task, examples):
        raise DataError(source, None, f"no candidate is labelled {task.labels[1]!r}, so no question can be ranked "
                                      "(MRR, MAP)")


def ranking_scores(questions: Sequence[str], relevant: np.ndarray, scores: np.ndarray) -> dict:
    """MRR and MAP (×100) of candidates grouped by their question, each question's candidates ranked
    by `scores` (higher first; a tie keeps the input order). A question with no relevant candidate
    has no rank to score: it is left out and counted in "questions_without_answer"."""
    groups: dict[str, list[int]] = {}
    for i, question in enumerate(questions):
        groups.setdefault(question, []).append(i)
    reciprocal_ranks, average_precisions, without = [], [], 0
    for members in groups.values():
        order = sorted(members, key=lambda i: -scores[i])  # stable: ties keep the input order
        hits = np.asarray(relevant)[order]
        if not hits.any():
            without += 1
            continue
        ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the relevant candidates
        reciprocal_ranks.append(1.0 / ranks[0])
        average_precisions.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    if not reciprocal_ranks:
        raise ValueError("no question has a relevant candidate, so there is nothing to rank")
    return {"MRR": 100.0 * float(np.mean(reciprocal_ranks)), "MAP": 100.0 * float(np.mean(average_precisions)),
            "questions": len(reciprocal_ranks), "questions_without_answer": without}


PREDICTIONS_FILE = "predictions.tsv"


@dataclasses.dataclass
class ClassificationPredictions:
    """Each example's predicted label and the probability of every label (softmax of its logits)."""

    examples: Sequence[ClassificationExample]
    labels: tuple[str, ...]
    logits: np.ndarray  # [n, num_labels]

    @property
    def probabilities(self) -> np.ndarray:
        shifted = np.asarray(self.logits, dtype=np.float64)
        shifted = np.exp(shifted - shifted.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    @property
    def predicted(self) -> list[str]:
        return [self.labels[i] for i in np.asarray(self.logits).argmax(axis=1)]

    def write(self, directory) -> Path:
        """predictions.tsv in `directory`, written atomically: a header `id prediction p(<label>)...`,
        then one line per example in input order (id: file:line of the example). Probabilities are
        written in full (the shortest text that reads back as the same float64), so that DBQA's
        ranking, and its MRR and MAP, can be recomputed from the file without ties."""
        path = Path(directory) / PREDICTIONS_FILE
        header = "\t".join(["id", "prediction"] + [f"p({label})" for label in self.labels])
        rows = ["\t".join([example.guid, label] + [repr(float(p)) for p in probabilities])
                for example, label, probabilities in zip(self.examples, self.predicted, self.probabilities)]
        write_text(path, "\n".join([header] + rows) + "\n")
        return path

