"""Sentence classification and sentence-pair matching data: examples read from TSV files, and the
[CLS] a [SEP] (b [SEP]) features a BERT classifier takes.

Columns are found by the file's header, never by position; a file without a header (THUCNews'
`label \\t text`) is read with the column names its task gives. Every bad record is an error naming
the file and the line, raised before any training.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnbert.errors import DataError
from cnbert.io_utils import read_text_file
from cnbert.tokenization import ChineseBertTokenizer

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClassificationExample:
    """One text (text_b None) or text pair, with its label name (None when unlabelled).
    guid names the record in messages and predictions: "<file name>:<line>"."""

    guid: str
    text_a: str
    text_b: str | None
    label: str | None


@dataclasses.dataclass(frozen=True)
class TsvFormat:
    """How a task's files are laid out: the column holding each field, and whether the first line
    is a header naming them (otherwise `columns` gives every column, in order)."""

    text_a: str
    label: str
    text_b: str | None = None
    header: bool = True
    columns: tuple[str, ...] = ()  # only without a header
    # "error": a label outside the task's stops the read; "skip": the record is left out and logged
    # (for a release known to hold such a line, e.g. NLPCC 2017 DBQA dev's label `10`)
    bad_labels: str = "error"

    def __post_init__(self):
        if not self.header and not self.columns:
            raise ValueError("a format without a header must list its columns")
        if self.bad_labels not in ("error", "skip"):
            raise ValueError(f"bad_labels must be 'error' or 'skip', got {self.bad_labels!r}")


def read_classification_tsv(path, fmt: TsvFormat, labels: Sequence[str], labelled: bool = True,
                            left_out: list | None = None) -> list[ClassificationExample]:
    """Examples of a tab-separated file. Lines are split on "\\n" only (texts may hold other line
    separators, such as U+2028) and on tabs only (quotes are text, as in Google BERT's readers).

    labelled=True: every line needs a label from `labels`. labelled=False (text to classify): the
    label column may be absent (from the header, or from every line of a headerless format); if
    present, its values are still checked. A format with bad_labels="skip" leaves a record with
    another label out of a labelled read, with a warning naming its line, and appends its
    "<file name>:<line>" to `left_out` when given; an unlabelled read keeps the record, without its
    label.
    Raises DataError naming the file and line: a missing column, a line with another number of
    fields than the header, an empty text, a label not in `labels`, or an empty file.
    """
    path = Path(path)
    lines = read_text_file(path, "data file").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if fmt.header:
        if not lines:
            raise DataError(path, None, "empty file; expected a header line")
        columns, first_line = lines[0].split("\t"), 2
        body = lines[1:]
    else:
        columns, first_line, body = list(fmt.columns), 1, lines
        if not labelled and body and len(body[0].split("\t")) == len(columns) - 1:
            # text to classify in a headerless format: its lines may leave out the label column
            columns.remove(fmt.label)
    wanted = [fmt.text_a] + ([fmt.text_b] if fmt.text_b else [])
    has_label = fmt.label in columns
    if labelled or has_label:
        wanted.append(fmt.label)
    missing = [name for name in wanted if name not in columns]
    if missing:
        # a file of another format can have a first line of megabytes: show its start
        shown = str(columns) if len(str(columns)) <= 200 else f"{str(columns)[:200]}... ({len(lines[0])} characters)"
        raise DataError(path, "line 1", f"the header {shown} lacks the column(s) {missing}"
                        + (" (the label column is needed to train and score)" if missing == [fmt.label] else ""))
    duplicated = sorted({name for name in columns if columns.count(name) > 1} & set(wanted))
    if duplicated:
        raise DataError(path, "line 1", f"the header names {duplicated} more than once")
    index = {name: columns.index(name) for name in wanted}
    known_labels = set(labels)
    examples = []
    for number, line in enumerate(body, start=first_line):
        where = f"line {number}"
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataError(path, where, f"{len(fields)} tab-separated fields, expected {len(columns)} "
                                         f"({', '.join(columns)})")
        text_a = fields[index[fmt.text_a]]
        text_b = fields[index[fmt.text_b]] if fmt.text_b else None
        for name, text in ((fmt.text_a, text_a), (fmt.text_b, text_b)):
            if text is not None and not text.strip():
                raise DataError(path, where, f"{name} is empty")
        label = fields[index[fmt.label]] if fmt.label in index else None
        if label is not None and label not in known_labels:
            problem = f"label {label!r} is not one of this task's labels {list(labels)}"
            if fmt.bad_labels == "error":
                raise DataError(path, where, problem)
            if labelled:
                log.warning("%s: %s: %s; the record is left out", path, where, problem)
                if left_out is not None:
                    left_out.append(f"{path.name}:{number}")
                continue
            # text to classify: every line gets a prediction; this line's label is left out of the score
            log.warning("%s: %s: %s; the line is predicted but left out of the score", path, where, problem)
            label = None
        examples.append(ClassificationExample(f"{path.name}:{number}", text_a, text_b, label))
    if not examples:
        raise DataError(path, None, "no examples")
    return examples


@dataclasses.dataclass
class ClassificationFeatures:
    """Model inputs for a list of examples, one row each, padded to the longest row (at most
    max_seq_length). labels: label indices, or None for unlabelled examples."""

    input_ids: np.ndarray       # int64 [n, seq]
    token_type_ids: np.ndarray  # int64 [n, seq]: 0 for [CLS] a [SEP], 1 for b [SEP]
    attention_mask: np.ndarray  # int64 [n, seq]: 1 token, 0 padding
    labels: np.ndarray | None   # int64 [n]
    num_truncated: int          # examples that lost word pieces to max_seq_length

    def __len__(self) -> int:
        return len(self.input_ids)

    def model_arrays(self) -> dict[str, np.ndarray]:
        """What the trainers take: the inputs, and the labels when there are any."""
        arrays = {"input_ids": self.input_ids, "token_type_ids": self.token_type_ids,
                  "attention_mask": self.attention_mask}
        if self.labels is not None:
            arrays["labels"] = self.labels
        return arrays


def truncate_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
    """Google BERT's _truncate_seq_pair, in place: drop the last word piece of the longer sequence
    (of b on a tie) until both fit in max_length. Trimming the longer one loses the least of the
    shorter text, which often carries the question or hypothesis."""
    while len(tokens_a) + len(tokens_b) > max_length:
        (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def build_classification_features(examples: Sequence[ClassificationExample], tokenizer: ChineseBertTokenizer,
                                  max_seq_length: int, labels: Sequence[str]) -> ClassificationFeatures:
    """[CLS] a [SEP] for one text, [CLS] a [SEP] b [SEP] for a pair, truncated to max_seq_length
    with truncate_pair. labels: the task's label names (their order gives the indices); examples
    must all be labelled or all unlabelled."""
    if not examples:
        raise ValueError("no examples to featurise")
    pair = examples[0].text_b is not None
    if any((e.text_b is not None) != pair for e in examples):
        raise ValueError("examples mix single texts and text pairs")
    special = 3 if pair else 2
    if max_seq_length < special + 2:
        raise ValueError(f"max_seq_length {max_seq_length} leaves no room for text next to the special tokens")
    labelled = [e.label is not None for e in examples]
    if any(labelled) and not all(labelled):
        raise ValueError(f"example {examples[labelled.index(False)].guid} has no label, but others have one")
    label_index = {name: i for i, name in enumerate(labels)}
    pieces_a = tokenizer.encode_ids_batch([e.text_a for e in examples])
    pieces_b = tokenizer.encode_ids_batch([e.text_b for e in examples]) if pair else None
    rows, truncated = [], 0
    for i in range(len(examples)):
        a = list(pieces_a[i])
        b = list(pieces_b[i]) if pair else []
        before = len(a) + len(b)
        truncate_pair(a, b, max_seq_length - special)
        truncated += len(a) + len(b) < before
        ids = [tokenizer.cls_id] + a + [tokenizer.sep_id]
        types = [0] * len(ids)
        if pair:
            ids += b + [tokenizer.sep_id]
            types += [1] * (len(b) + 1)
        rows.append((ids, types))
    width = max(len(ids) for ids, _ in rows)
    input_ids = np.full((len(rows), width), tokenizer.pad_id, dtype=np.int64)
    token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, (ids, types) in enumerate(rows):
        input_ids[i, :len(ids)] = ids
        token_type_ids[i, :len(types)] = types
        attention_mask[i, :len(ids)] = 1
    label_ids = None
    if all(labelled):
        unknown = next((e for e in examples if e.label not in label_index), None)
        if unknown is not None:
            raise ValueError(f"example {unknown.guid}: label {unknown.label!r} is not one of {list(labels)}")
        label_ids = np.array([label_index[e.label] for e in examples], dtype=np.int64)
    return ClassificationFeatures(input_ids, token_type_ids, attention_mask, label_ids, truncated)
