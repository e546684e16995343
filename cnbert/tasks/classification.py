"""Sentence classification and matching tasks (ChnSentiCorp, THUCNews, LCQMC, XNLI): each task's
file format, its labels (their order fixes the classifier's output indices), and its score.

Every task here is scored by accuracy (REFERENCE.md §1), so the best evaluation of a run is the
one with the highest accuracy (ties keep the earlier).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cnbert.data.classification import ClassificationExample, TsvFormat, read_classification_tsv

METRIC_NAMES = ("accuracy",)


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    name: str
    title: str
    labels: tuple[str, ...]
    format: TsvFormat

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def pairs(self) -> bool:
        """Whether an example is a text pair ([CLS] a [SEP] b [SEP])."""
        return self.format.text_b is not None

    def read(self, path, labelled: bool = True) -> list[ClassificationExample]:
        return read_classification_tsv(path, self.format, self.labels, labelled=labelled)


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
}


def get_task(name: str) -> ClassificationTask:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown classification task {name!r}; expected one of {sorted(TASKS)}") from None


def score(task: ClassificationTask, examples: Sequence[ClassificationExample], logits: np.ndarray) -> dict:
    """{"accuracy": % of examples whose highest logit is their label (unrounded), "total": count,
    "per_label": {label: {"gold", "predicted", "correct"}}} for labelled examples and their logits
    [n, num_labels]."""
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
    return {"accuracy": 100.0 * float(correct.mean()), "total": len(examples), "per_label": per_label}


def criterion(metrics) -> float:
    """The one number that ranks evaluations: accuracy."""
    return float(metrics["accuracy"])
