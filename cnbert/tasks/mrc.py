"""Reading-comprehension tasks (CMRC 2018, DRCD, CJRC): which reader, labels and scorer each uses,
and how a run's evaluation is scored and ranked.

The best evaluation of a run is chosen by one criterion, F1 + EM of the same evaluation, never
the best F1 and the best EM picked independently (a defect of the original list).
"""
from __future__ import annotations

import dataclasses
import html
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from cnbert.data import (MrcExample, ReadResult, TraditionalToSimplified, mrc_examples, read_cjrc, read_cmrc2018,
                         read_drcd)
from cnbert.eval.cjrc_metric import DOMAINS, evaluate_cjrc
from cnbert.eval.cmrc_metric import evaluate_cmrc
from cnbert.eval.predictions import question_id

METRIC_NAMES = ("F1", "EM")


def criterion(metrics: Mapping[str, float]) -> float:
    """The one number that ranks evaluations: F1 + EM."""
    return float(metrics["F1"]) + float(metrics["EM"])


@dataclasses.dataclass(frozen=True)
class MrcTask:
    name: str
    title: str
    read: Callable[[str], ReadResult]
    answer_classes: bool  # CJRC's span / YES / NO / unknown head
    converter: Callable[[], TraditionalToSimplified] | None = None  # what `read` converts the model's text with
    # predictions.json as [{"id", "answer"}], the only form the official scorer reads (CJRC's evaluate.py)
    predictions_as_list: bool = False
    metric_names: tuple[str, ...] = METRIC_NAMES  # what the multi-seed report shows

    def criterion(self, metrics: Mapping[str, float]) -> float:
        return criterion(metrics)

    def question_example(self, question: str, context: str) -> MrcExample:
        """One question on one passage (predict mode's --question / --context), read as `read`
        reads a file's: a DRCD model reads it in simplified Chinese, as it was trained."""
        return mrc_examples.question_example(question, context, converter=self.converter() if self.converter else None)


TASKS = {
    "cmrc2018": MrcTask("cmrc2018", "CMRC 2018", read_cmrc2018, answer_classes=False),
    "drcd": MrcTask("drcd", "DRCD", read_drcd, answer_classes=False, converter=TraditionalToSimplified),
    # the official scorer reports each domain beside the overall scores, and so does the report
    "cjrc": MrcTask("cjrc", "CJRC", read_cjrc, answer_classes=True, predictions_as_list=True,
                    metric_names=METRIC_NAMES + tuple(f"{domain}_{m}" for domain in DOMAINS for m in METRIC_NAMES)),
}


def get_task(name: str) -> MrcTask:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown reading-comprehension task {name!r}; expected one of {sorted(TASKS)}") from None


def split_by_passage(examples: Sequence[MrcExample], dev_fraction: float, seed: int = 0
                     ) -> tuple[list[MrcExample], list[MrcExample]]:
    """Split labelled examples into train and dev by passage, so no passage is in both (CJRC has
    no public training set; the original list trained on 90 % of the labelled file and evaluated
    on the other 10 %). Copies of one passage count as one (passage_key). Deterministic for a
    given seed and file; ValueError when there are fewer than two passages."""
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    keys = [passage_key(example.context_text) for example in examples]
    passages = list(dict.fromkeys(keys))
    if len(passages) < 2:
        raise ValueError(f"{len(passages)} passage(s), copies counted once: at least two are needed, one to train "
                         "and one to evaluate")
    order = np.random.default_rng(seed).permutation(len(passages))
    n_dev = min(len(passages) - 1, max(1, round(len(passages) * dev_fraction)))
    dev_passages = {passages[i] for i in order[:n_dev]}
    train = [example for example, key in zip(examples, keys) if key not in dev_passages]
    dev = [example for example, key in zip(examples, keys) if key in dev_passages]
    return train, dev


def passage_key(context: str) -> str:
    """What makes two passages one for split_by_passage: the text with HTML entities decoded and
    width variants folded (NFKC). The CJRC file holds one passage twice, once with `&hellip;` and
    once with `…`, each with its own questions: kept apart, a dev passage would be a training one."""
    return unicodedata.normalize("NFKC", html.unescape(context))


def seen_key(example: MrcExample) -> tuple[str, str]:
    """What makes an evaluated question a training one (runners' seen_in_training): the same
    question on the same passage, copies of a passage counting as one (passage_key)."""
    return example.question_text, passage_key(example.context_text)


def restrict_gold(gold_data: Mapping, keep_ids: Collection[str]) -> dict:
    """The gold file's JSON with only the questions in `keep_ids` (to score one split of a file)."""
    keep_ids = set(keep_ids)
    articles = []
    for article in gold_data["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = [qa for qa in paragraph["qas"] if question_id(qa["id"]) in keep_ids]
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    return {**gold_data, "data": articles}


def score(task: str, gold_data: Mapping, predictions: Mapping[str, str], source: str) -> dict:
    """Official scores as a flat dict with at least F1 and EM (×100, unrounded)."""
    if get_task(task).answer_classes:
        scores = evaluate_cjrc(gold_data, predictions, source=source)
        flat = {"F1": scores["overall"]["f1"], "EM": scores["overall"]["em"], "TOTAL": scores["overall"]["qas"]}
        for domain in DOMAINS:
            flat.update({f"{domain}_F1": scores[domain]["f1"], f"{domain}_EM": scores[domain]["em"],
                         f"{domain}_TOTAL": scores[domain]["qas"]})
        return flat
    return dict(evaluate_cmrc(gold_data, predictions, source=source))
