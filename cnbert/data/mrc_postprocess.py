"""From start / end (and CJRC class) logits per feature to one answer text per question.

Spans: over all windows of a question, the `n_best_size` best start pieces (context pieces that are
max context in their window) and the `n_best_size` best end pieces (any context piece) of each
window are paired; a pair is kept when end >= start and it spans at most `max_answer_length` pieces,
and scored start_logit + end_logit. A character span reached through several piece pairs (pieces
sharing one character, such as the jamo of a Hangul syllable) is listed once, with its best score. The answer is the best span's text, sliced from the example's ORIGINAL
context_text by character offsets (for DRCD, the traditional text), never rebuilt from word pieces;
"" when no valid span exists. n-best probabilities are a softmax over the kept n-best scores.

CJRC (class_logits given, 4 classes in AnswerKind order SPAN, YES, NO, UNKNOWN): with p_w the
softmax of window w's class logits,
    score(SPAN) = max_w log p_w(SPAN), score(YES) = max_w log p_w(YES), score(NO) = max_w log p_w(NO)
    score(UNKNOWN) = min_w log p_w(UNKNOWN)   (the null score: every window must find no answer)
The answer is unknown ("") when score(UNKNOWN) - max(score(SPAN), score(YES), score(NO)) >
`null_score_threshold`; otherwise the best of SPAN / YES / NO: the best span's text, "YES" or "NO".
A max over windows for the answering kinds matches the labels: only the window holding the answer
is taught "span", while a window without it is not taught anything about the class.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from cnbert.data.mrc_examples import ANSWER_CLASSES, AnswerKind, MrcExample
from cnbert.data.mrc_features import MrcFeatures
from cnbert.io_utils import write_json

PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
CLASS_SCORES_FILE = "class_scores.json"


@dataclasses.dataclass(frozen=True)
class SpanCandidate:
    """One n-best span: its text, probability among the n-best, logits and [char_start, char_end)."""

    text: str
    probability: float
    start_logit: float
    end_logit: float
    char_start: int
    char_end: int

    def to_json(self) -> dict:
        return {"text": self.text, "probability": self.probability,
                "start_logit": self.start_logit, "end_logit": self.end_logit}


@dataclasses.dataclass(frozen=True)
class MrcPredictions:
    """answers: {qas_id: text}; nbest: {qas_id: spans, best first}; kinds: {qas_id: chosen AnswerKind}
    (SPAN for every question without class logits); class_scores (CJRC): {qas_id: the four scores
    of the module docstring, in AnswerKind order}; answers_as_list: write predictions.json as
    [{"id", "answer"}], the only form CJRC's official evaluate.py reads (CMRC 2018's and DRCD's
    scorers read {id: text})."""

    answers: dict[str, str]
    nbest: dict[str, list[SpanCandidate]]
    kinds: dict[str, AnswerKind]
    class_scores: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    answers_as_list: bool = False

    def write(self, output_dir) -> list[Path]:
        """Write predictions.json ({id: text}, or [{"id": id, "answer": text}] with answers_as_list)
        and nbest_predictions.json ({id: [{text, probability, start_logit, end_logit}, ...]}), and
        with class scores (CJRC) class_scores.json ({id: {"span", "yes", "no", "unknown": the scores
        of the module docstring, "answer_kind": the kind chosen}}, what --null_score_threshold is
        tuned on), each atomically, into output_dir; return their paths."""
        output_dir = Path(output_dir)
        answers = ([{"id": qas_id, "answer": text} for qas_id, text in self.answers.items()] if self.answers_as_list
                   else self.answers)
        contents = {PREDICTIONS_FILE: answers,
                    NBEST_FILE: {qas_id: [c.to_json() for c in spans] for qas_id, spans in self.nbest.items()}}
        if self.class_scores:
            contents[CLASS_SCORES_FILE] = {
                qas_id: {**dict(zip(ANSWER_CLASSES, scores)), "answer_kind": ANSWER_CLASSES[self.kinds[qas_id]]}
                for qas_id, scores in self.class_scores.items()}
        for name, content in contents.items():
            write_json(output_dir / name, content)
        return [output_dir / name for name in contents]


def postprocess_predictions(examples: Sequence[MrcExample], features: MrcFeatures, start_logits, end_logits, *,
                            class_logits=None, n_best_size: int = 20, max_answer_length: int = 50,
                            null_score_threshold: float = 0.0) -> MrcPredictions:
    """Answers for `examples` from logits of `features` (built from the same examples, same order).

    start_logits, end_logits: [N, L]; class_logits (CJRC): [N, 4]; N = len(features). An example
    without features (a passage with no word pieces) gets "".
    """
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    expected = features.input_ids.shape
    if start_logits.shape != expected or end_logits.shape != expected:
        raise ValueError(f"start_logits {start_logits.shape} and end_logits {end_logits.shape} must both have the "
                         f"features' shape {expected}")
    if class_logits is not None:
        class_logits = np.asarray(class_logits, dtype=np.float64)
        if class_logits.shape != (expected[0], len(AnswerKind)):
            raise ValueError(f"class_logits has shape {class_logits.shape}, "
                             f"expected ({expected[0]}, {len(AnswerKind)})")
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError(f"n_best_size ({n_best_size}) and max_answer_length ({max_answer_length}) must be positive")
    if len(features) and features.example_index.max() >= len(examples):
        raise ValueError(f"features refer to example {features.example_index.max()}, but only {len(examples)} "
                         "examples were given")

    features_of = defaultdict(list)
    for f, example_index in enumerate(features.example_index):
        features_of[int(example_index)].append(f)
    pairs = _candidate_pairs(features, start_logits, end_logits, n_best_size, max_answer_length)

    answers, nbest, kinds, class_scores = {}, {}, {}, {}
    for example_index, example in enumerate(examples):
        feature_ids = features_of.get(example_index, [])
        spans = _best_spans(example, features, feature_ids, pairs, start_logits, end_logits, n_best_size)
        nbest[example.qas_id] = spans
        kind = AnswerKind.SPAN
        if class_logits is not None and feature_ids:
            scores = _class_scores(class_logits[feature_ids])
            class_scores[example.qas_id] = scores.tolist()
            kind = _choose_kind(scores, null_score_threshold, can_span=bool(spans))
        kinds[example.qas_id] = kind
        answers[example.qas_id] = {AnswerKind.SPAN: spans[0].text if spans else "", AnswerKind.YES: "YES",
                                   AnswerKind.NO: "NO", AnswerKind.UNKNOWN: ""}[kind]
    return MrcPredictions(answers, nbest, kinds, class_scores)


@dataclasses.dataclass(frozen=True)
class _Pairs:
    """Per feature, the valid (start, end) pairs among its top-k starts x top-k ends, best first:
    start[f, j], end[f, j] for j < count[f]."""

    start: np.ndarray
    end: np.ndarray
    count: np.ndarray


_PAIR_CHUNK = 1024  # features scored at once: the [chunk, k * k] temporaries stay tens of MB


def _candidate_pairs(features: MrcFeatures, start_logits, end_logits, n_best_size, max_answer_length) -> _Pairs:
    chunks = [_chunk_pairs(features.context_offsets[rows, :, 0] >= 0, features.token_is_max_context[rows],
                           start_logits[rows], end_logits[rows], n_best_size, max_answer_length)
              for rows in (slice(i, i + _PAIR_CHUNK) for i in range(0, max(len(start_logits), 1), _PAIR_CHUNK))]
    return _Pairs(*(np.concatenate([getattr(chunk, name) for chunk in chunks]) for name in ("start", "end", "count")))


def _chunk_pairs(is_context, is_max_context, start_logits, end_logits, n_best_size, max_answer_length) -> _Pairs:
    start_scores = np.where(is_context & is_max_context, start_logits, -np.inf)
    end_scores = np.where(is_context, end_logits, -np.inf)
    k = min(n_best_size, start_scores.shape[1])
    starts = np.argpartition(-start_scores, k - 1, axis=1)[:, :k]
    ends = np.argpartition(-end_scores, k - 1, axis=1)[:, :k]
    s, e = starts[:, :, None], ends[:, None, :]
    scores = (np.take_along_axis(start_scores, starts, axis=1)[:, :, None]
              + np.take_along_axis(end_scores, ends, axis=1)[:, None, :])
    valid = np.isfinite(scores) & (e >= s) & (e - s < max_answer_length)
    scores = np.where(valid, scores, -np.inf).reshape(len(scores), -1)
    order = np.argsort(-scores, axis=1, kind="stable")
    pair_start = np.take_along_axis(np.broadcast_to(s, valid.shape).reshape(len(scores), -1), order, axis=1)
    pair_end = np.take_along_axis(np.broadcast_to(e, valid.shape).reshape(len(scores), -1), order, axis=1)
    return _Pairs(pair_start.astype(np.int32), pair_end.astype(np.int32), valid.reshape(len(scores), -1).sum(axis=1))


def _best_spans(example: MrcExample, features: MrcFeatures, feature_ids, pairs: _Pairs, start_logits, end_logits,
                n_best_size: int) -> list[SpanCandidate]:
    best: dict[tuple[int, int], tuple[float, float, float]] = {}  # (char_start, char_end) -> (score, start, end)
    for f in feature_ids:
        starts, ends = pairs.start[f, :pairs.count[f]], pairs.end[f, :pairs.count[f]]
        char_starts = features.context_offsets[f, starts, 0].tolist()
        char_ends = features.context_offsets[f, ends, 1].tolist()
        found = set()
        for start, end, span in zip(starts.tolist(), ends.tolist(), zip(char_starts, char_ends)):
            if span in found:  # pieces sharing one character (Hangul jamo) give the same span twice
                continue
            found.add(span)
            score = start_logits[f, start] + end_logits[f, end]
            if span not in best or score > best[span][0]:
                best[span] = (float(score), float(start_logits[f, start]), float(end_logits[f, end]))
            # A span outside this window's n_best_size best distinct spans cannot be among the
            # question's n_best_size best.
            if len(found) == n_best_size:
                break
    ranked = sorted(best.items(), key=lambda item: item[1][0], reverse=True)[:n_best_size]
    if not ranked:
        return []
    scores = np.array([score for _, (score, _, _) in ranked])
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    return [SpanCandidate(example.context_text[char_start:char_end], float(p), start, end, char_start, char_end)
            for ((char_start, char_end), (_, start, end)), p in zip(ranked, probabilities)]


def _class_scores(class_logits: np.ndarray) -> np.ndarray:
    shifted = class_logits - class_logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    scores = log_probs.max(axis=0)
    scores[AnswerKind.UNKNOWN] = log_probs[:, AnswerKind.UNKNOWN].min()
    return scores


def _choose_kind(scores: np.ndarray, null_score_threshold: float, can_span: bool) -> AnswerKind:
    # Without a valid span candidate the span class cannot answer: the choice is among the others.
    answering = (AnswerKind.SPAN, AnswerKind.YES, AnswerKind.NO) if can_span else (AnswerKind.YES, AnswerKind.NO)
    best = max(answering, key=lambda kind: scores[kind])
    if scores[AnswerKind.UNKNOWN] - scores[best] > null_score_threshold:
        return AnswerKind.UNKNOWN
    return best
