"""Model inputs for reading comprehension, as numpy arrays any framework can take.

Each question becomes one or more features `[CLS] question [SEP] window [SEP] [PAD]...`: the question
is cut to `max_query_length` word pieces and the passage's word pieces are covered by sliding
windows as in google-research/bert's run_squad.py: each window holds up to
`max_seq_length - len(question) - 3` pieces and the next one starts `doc_stride` pieces later
(doc_stride is the step between windows, not their overlap). A piece seen by several windows is
"max context" in the one where it has the most context on its nearer side (run_squad's
`_check_is_max_context`); post-processing only lets an answer start on such pieces.

Labels (training features only), per feature:
- start_positions / end_positions: indices in the feature of the first and last piece of the
  training answer (the example's first reference, offsets already repaired by the reader) when
  the window holds the whole answer; 0 ([CLS]) otherwise, and for CJRC YES / NO / unknown questions.
- answer_class (CJRC, `answer_classes=True`): AnswerKind of the question (0 span, 1 YES, 2 NO,
  3 unknown). A window of a span question that does not contain the answer gets IGNORE_INDEX
  (-100, the ignore index of torch's cross-entropy): it is neither "span here" nor "unknown", and
  labelling it unknown would teach the model that answerable questions are unanswerable.
A span question whose training answer has no usable offset (not found by the reader, or covering no
word piece) or fits in no window gets no training features; its id is listed in
`MrcFeatures.unlabelled_qas_ids` and logged.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from cnbert.data.labels import IGNORE_INDEX
from cnbert.data.mrc_examples import AnswerKind, MrcExample
from cnbert.data.windows import doc_windows, max_context_window
from cnbert.tokenization import ChineseBertTokenizer

logger = logging.getLogger(__name__)

NOT_CONTEXT = -1  # context_offsets of [CLS], question, [SEP] and [PAD] positions


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Sizes, in word pieces. Defaults are the original list's run settings."""

    max_seq_length: int = 512
    max_query_length: int = 64
    doc_stride: int = 128

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field.name} must be a positive integer, got {value!r}")
        if self.min_window_tokens < 1:
            raise ValueError(f"max_seq_length ({self.max_seq_length}) leaves no room for the passage: it must be "
                             f"at least max_query_length + 4 = {self.max_query_length + 4} "
                             "([CLS] question [SEP] passage [SEP])")
        if self.doc_stride > self.min_window_tokens:
            raise ValueError(f"doc_stride ({self.doc_stride}) is larger than the smallest passage window "
                             f"(max_seq_length - max_query_length - 3 = {self.min_window_tokens}); "
                             "windows would skip passage tokens")

    @property
    def min_window_tokens(self) -> int:
        """Passage pieces per window when the question uses all of max_query_length."""
        return self.max_seq_length - self.max_query_length - 3


@dataclasses.dataclass(frozen=True)
class MrcFeatures:
    """N features of length L = max_seq_length, in example order (all windows of an example together).

    input_ids, token_type_ids, attention_mask: [N, L] int64 (pad id 0, type 1 on window + last [SEP]).
    example_index: [N] int64, index of the feature's example in the list given to `build_features`.
    window_index: [N] int64, position of the window among its example's windows.
    context_offsets: [N, L, 2] int32, [start, end) character offsets of each window piece in the
        example's model_context (= offsets in context_text); NOT_CONTEXT (-1) elsewhere.
    token_is_max_context: [N, L] bool, True only on window pieces that are max context here.
    start_positions, end_positions: [N] int64 (training features; else None).
    answer_class: [N] int64 (training features with answer_classes=True; else None).
    unlabelled_qas_ids: questions left out of training features (see the module docstring).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    example_index: np.ndarray
    window_index: np.ndarray
    context_offsets: np.ndarray
    token_is_max_context: np.ndarray
    start_positions: np.ndarray | None = None
    end_positions: np.ndarray | None = None
    answer_class: np.ndarray | None = None
    unlabelled_qas_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.input_ids)

    def model_arrays(self) -> dict[str, np.ndarray]:
        """Model inputs and the labels present, by name, for batching: slice each with the same indices."""
        names = ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions", "answer_class")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclasses.dataclass(frozen=True)
class _Window:
    example_index: int
    window_index: int
    start: int  # first passage piece
    length: int
    question_ids: list[int]
    passage_ids: np.ndarray  # all of the passage's pieces
    passage_offsets: np.ndarray  # [pieces, 2]
    is_max_context: np.ndarray  # [pieces] bool: the piece is max context in this window


def answer_token_span(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last passage piece overlapping characters [char_start, char_end), or None if none does.

    A piece only partly inside the answer (an answer starting inside an English word piece)
    is included, so the labelled span may be wider than the answer text."""
    first = int(np.searchsorted(offsets[:, 1], char_start, side="right"))
    last = int(np.searchsorted(offsets[:, 0], char_end, side="left")) - 1
    if first > last:
        return None
    return first, last


def build_features(examples: Sequence[MrcExample], tokenizer: ChineseBertTokenizer, config: FeatureConfig, *,
                   training: bool, answer_classes: bool = False) -> MrcFeatures:
    """Tokenise and window `examples`; with `training`, label every feature (see the module docstring).

    `answer_classes` adds CJRC's answer_class labels; without it every training question must have a
    span answer.
    """
    if answer_classes and not training:
        raise ValueError("answer_classes labels only training features; pass training=True")
    passage_number: dict[str, int] = {}
    for example in examples:
        passage_number.setdefault(example.model_context, len(passage_number))
    passages = [_as_arrays(enc) for enc in tokenizer.encode_batch(list(passage_number))]
    questions = tokenizer.encode_batch([example.model_question for example in examples])

    windows: list[_Window] = []
    labels: list[tuple[int, int, int]] = []
    unlabelled: list[str] = []
    best_windows: dict[tuple[int, int], np.ndarray] = {}  # (passage, question length) -> max-context window
    for example_index, example in enumerate(examples):
        question_ids = questions[example_index].ids[:config.max_query_length]
        number = passage_number[example.model_context]
        passage_ids, offsets = passages[number]
        spans = doc_windows(len(passage_ids), config.max_seq_length - len(question_ids) - 3, config.doc_stride)
        if (number, len(question_ids)) not in best_windows:
            best_windows[number, len(question_ids)] = max_context_window(len(passage_ids), spans)
        best_window = best_windows[number, len(question_ids)]
        if training:
            window_labels = _window_labels(example, offsets, spans, len(question_ids) + 2, answer_classes)
            if window_labels is None:
                unlabelled.append(example.qas_id)
                continue
            labels.extend(window_labels)
        windows.extend(_Window(example_index, i, start, length, question_ids, passage_ids, offsets, best_window == i)
                       for i, (start, length) in enumerate(spans))
    if unlabelled:
        logger.warning("%d questions have no training answer that a window can hold and get no training features: %s",
                       len(unlabelled), ", ".join(unlabelled))

    label_arrays = {}
    if training:
        label_array = np.array(labels, dtype=np.int64).reshape(-1, 3)
        label_arrays = {"start_positions": label_array[:, 0], "end_positions": label_array[:, 1]}
        if answer_classes:
            label_arrays["answer_class"] = label_array[:, 2]
    return MrcFeatures(**_input_arrays(windows, tokenizer, config.max_seq_length),
                       example_index=np.array([w.example_index for w in windows], dtype=np.int64),
                       window_index=np.array([w.window_index for w in windows], dtype=np.int64),
                       unlabelled_qas_ids=tuple(unlabelled), **label_arrays)


def _input_arrays(windows: Sequence[_Window], tokenizer: ChineseBertTokenizer, seq_len: int) -> dict[str, np.ndarray]:
    """[CLS] question [SEP] window [SEP] [PAD]... and the per-position offsets and max-context flags."""
    n = len(windows)
    input_ids = np.full((n, seq_len), tokenizer.pad_id, dtype=np.int64)
    token_type_ids = np.zeros((n, seq_len), dtype=np.int64)
    attention_mask = np.zeros((n, seq_len), dtype=np.int64)
    context_offsets = np.full((n, seq_len, 2), NOT_CONTEXT, dtype=np.int32)
    token_is_max_context = np.zeros((n, seq_len), dtype=bool)
    for f, window in enumerate(windows):
        begin = len(window.question_ids) + 2
        stop = begin + window.length
        pieces = slice(window.start, window.start + window.length)
        input_ids[f, 0] = tokenizer.cls_id
        input_ids[f, 1:begin - 1] = window.question_ids
        input_ids[f, begin - 1] = tokenizer.sep_id
        input_ids[f, begin:stop] = window.passage_ids[pieces]
        input_ids[f, stop] = tokenizer.sep_id
        token_type_ids[f, begin:stop + 1] = 1
        attention_mask[f, :stop + 1] = 1
        context_offsets[f, begin:stop] = window.passage_offsets[pieces]
        token_is_max_context[f, begin:stop] = window.is_max_context[pieces]
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "context_offsets": context_offsets, "token_is_max_context": token_is_max_context}


def _as_arrays(encoded) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array(encoded.ids, dtype=np.int64)
    offsets = np.array(encoded.offsets, dtype=np.int32).reshape(len(ids), 2)
    return ids, offsets


def _window_labels(example: MrcExample, offsets: np.ndarray, windows, first_context_position: int,
                   answer_classes: bool) -> list[tuple[int, int, int]] | None:
    """(start, end, answer_class) per window, or None if the example cannot be labelled."""
    kind = example.answer_kind
    if kind != AnswerKind.SPAN:
        if not answer_classes:
            raise ValueError(f"question {example.qas_id}: its training answer is {kind.name}, "
                             "which needs answer_classes=True (CJRC)")
        return [(0, 0, int(kind))] * len(windows)
    answer = example.training_answer
    span = None if answer.answer_start is None else answer_token_span(offsets, answer.answer_start, answer.answer_end)
    if span is None:
        return None
    first, last = span
    labels = []
    for start, length in windows:
        if start <= first and last < start + length:
            labels.append((first - start + first_context_position, last - start + first_context_position,
                           int(AnswerKind.SPAN)))
        else:
            labels.append((0, 0, IGNORE_INDEX))
    if all(start == 0 for start, _, _ in labels):
        return None  # no window holds it whole: every window would teach "not here"
    return labels
