"""Character-level named-entity data (MSRA NER): BIO files, features that give every character one
token, tags decoded back onto the characters, and entity-level precision / recall / F1.

A BIO file has one `character \\t tag` line per character and a blank line after each sentence; a
file to tag may give the characters alone. Entities are read as conlleval reads them: a chunk
starts at B-X, or at an I-X that does not continue a chunk of type X, and ends where the next tag
does not continue it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnbert.data.labels import IGNORE_INDEX
from cnbert.data.windows import doc_windows, max_context_window
from cnbert.errors import DataError
from cnbert.io_utils import read_text_file
from cnbert.tokenization import ChineseBertTokenizer



@dataclasses.dataclass(frozen=True)
class NerSentence:
    """A sentence's characters and their tags (None when untagged). guid: "<file name>:<line of its
    first character>"."""

    guid: str
    chars: tuple[str, ...]
    tags: tuple[str, ...] | None


def read_bio(path, labels: Sequence[str], tagged: bool = True) -> list[NerSentence]:
    """The sentences of a BIO file. tagged=True: every line is `character \\t tag` with a tag from
    `labels`; tagged=False: lines may give the character alone, in every sentence or in none (tags,
    when present, are checked).
    Raises DataError naming the file and line for a malformed line, a token that is not one
    character, an unknown tag, or a file without sentences."""
    path = Path(path)
    lines = read_text_file(path, "data file").split("\n")
    known = set(labels)
    sentences: list[NerSentence] = []
    chars: list[str] = []
    tags: list[str | None] = []
    pool: dict[str, str] = {}
    first_line = 0

    def close_sentence():
        if chars:
            has_tags = [tag is not None for tag in tags]
            if any(has_tags) and not all(has_tags):
                raise DataError(path, f"line {first_line}", "the sentence starting here tags some characters "
                                                            "and not others")
            sentences.append(NerSentence(f"{path.name}:{first_line}", tuple(chars),
                                         tuple(tags) if all(has_tags) else None))
        chars.clear()
        tags.clear()

    for number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        # only ASCII blanks end a sentence: a line holding U+3000 (the ideographic space, common in
        # Chinese text) is that character
        if not line.strip(" \t"):
            close_sentence()
            continue
        fields = line.split("\t")
        if len(fields) > 2 or (tagged and len(fields) != 2):
            raise DataError(path, f"line {number}", f"expected `character \\t tag`, got {len(fields)} "
                                                    f"tab-separated field(s)")
        if len(fields[0]) != 1:
            raise DataError(path, f"line {number}", f"{fields[0]!r} is not one character")
        tag = fields[1] if len(fields) == 2 else None
        if tag is not None and tag not in known:
            raise DataError(path, f"line {number}", f"tag {tag!r} is not one of this task's tags {list(labels)}")
        if not chars:
            first_line = number
        # one string object per distinct character and tag: the split's fresh copies would keep
        # millions of them alive (MSRA's training file: 214 MB instead of 44)
        chars.append(pool.setdefault(fields[0], fields[0]))
        tags.append(tag if tag is None else pool.setdefault(tag, tag))
    close_sentence()
    if not sentences:
        raise DataError(path, None, "no sentences")
    odd = next((s for s in sentences if (s.tags is None) != (sentences[0].tags is None)), None)
    if odd is not None:
        raise DataError(path, f"line {odd.guid.rsplit(':', 1)[1]}", "this sentence is " + (
            "untagged" if odd.tags is None else "tagged") + ", unlike the first: tag every sentence or none")
    return sentences


@dataclasses.dataclass
class NerFeatures:
    """One row per window of a sentence: [CLS] up to max_seq_length - 2 characters [SEP], padded to
    the longest row. A longer sentence is covered by windows that start doc_stride characters apart
    (see build_ner_features); each window is a training example with every character tagged, and
    each character is predicted from the window where it has the most context (token_is_max_context).
    tags: tag indices per token, IGNORE_INDEX on [CLS], [SEP] and padding (None untagged)."""

    input_ids: np.ndarray       # int64 [rows, seq]
    token_type_ids: np.ndarray  # int64 [rows, seq], all 0
    attention_mask: np.ndarray  # int64 [rows, seq]
    tags: np.ndarray | None     # int64 [rows, seq]
    sentence_index: np.ndarray  # int64 [rows]: the sentence of each row
    char_start: np.ndarray      # int64 [rows]: the row's first character within its sentence
    token_is_max_context: np.ndarray  # bool [rows, seq]: the token's character is predicted from this row

    def __len__(self) -> int:
        return len(self.input_ids)

    def model_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"input_ids": self.input_ids, "token_type_ids": self.token_type_ids,
                  "attention_mask": self.attention_mask}
        if self.tags is not None:
            arrays["tags"] = self.tags
        return arrays


def default_doc_stride(max_seq_length: int) -> int:
    """Half a window of max_seq_length - 2 characters (at least 1): every character but those
    near a sentence's ends is seen by a window with a quarter window of context on each side."""
    return max(1, (max_seq_length - 2) // 2)


def build_ner_features(sentences: Sequence[NerSentence], tokenizer: ChineseBertTokenizer, max_seq_length: int,
                       labels: Sequence[str], doc_stride: int | None = None) -> NerFeatures:
    """Windows of at most max_seq_length - 2 characters, one token per character
    (ChineseBertTokenizer.character_ids). A longer sentence gets windows starting doc_stride
    characters apart (default: default_doc_stride), the last ending at its last character
    (run_squad's doc_stride windows); doc_stride = max_seq_length - 2 gives consecutive windows
    without overlap. With overlap, a character near a window's edge is predicted from a window that
    sees context on both its sides. Sentences must be all tagged or all untagged."""
    if not sentences:
        raise ValueError("no sentences to featurise")
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length {max_seq_length} leaves no room for a character")
    span = max_seq_length - 2
    doc_stride = default_doc_stride(max_seq_length) if doc_stride is None else doc_stride
    if type(doc_stride) is not int or not 1 <= doc_stride <= span:
        raise ValueError(f"doc_stride must be between 1 and max_seq_length - 2 = {span} (larger steps would skip "
                         f"characters), got {doc_stride}")
    tagged = [s.tags is not None for s in sentences]
    if any(tagged) and not all(tagged):
        raise ValueError(f"sentence {sentences[tagged.index(False)].guid} has no tags, but others have")
    all_tagged = all(tagged)
    tag_index = {name: i for i, name in enumerate(labels)}
    rows = []  # (ids, tag ids or None, sentence, start, is max context [characters])
    for i, sentence in enumerate(sentences):
        ids = tokenizer.character_ids(sentence.chars)
        windows = doc_windows(len(ids), span, doc_stride)
        best_window = max_context_window(len(ids), windows)
        for number, (start, length) in enumerate(windows):
            tags = [tag_index[t] for t in sentence.tags[start:start + length]] if all_tagged else None
            rows.append((ids[start:start + length], tags, i, start, best_window[start:start + length] == number))
    width = max(len(ids) for ids, *_ in rows) + 2
    n = len(rows)
    input_ids = np.full((n, width), tokenizer.pad_id, dtype=np.int64)
    attention_mask = np.zeros((n, width), dtype=np.int64)
    tag_ids = np.full((n, width), IGNORE_INDEX, dtype=np.int64) if all_tagged else None
    token_is_max_context = np.zeros((n, width), dtype=bool)
    for r, (ids, tags, _, _, is_max_context) in enumerate(rows):
        input_ids[r, :len(ids) + 2] = [tokenizer.cls_id, *ids, tokenizer.sep_id]
        attention_mask[r, :len(ids) + 2] = 1
        token_is_max_context[r, 1:len(ids) + 1] = is_max_context
        if tag_ids is not None:
            tag_ids[r, 1:len(ids) + 1] = tags
    return NerFeatures(input_ids, np.zeros_like(input_ids), attention_mask, tag_ids,
                       sentence_index=np.array([row[2] for row in rows], dtype=np.int64),
                       char_start=np.array([row[3] for row in rows], dtype=np.int64),
                       token_is_max_context=token_is_max_context)


def decode_tags(sentences: Sequence[NerSentence], features: NerFeatures, logits: np.ndarray,
                labels: Sequence[str]) -> list[list[str]]:
    """Each sentence's predicted tag per character: the argmax of the logits [rows, seq, tags] of
    the window where the character has the most context."""
    logits = np.asarray(logits)
    if logits.shape[:2] != features.input_ids.shape or logits.shape[2] != len(labels):
        raise ValueError(f"logits have shape {logits.shape}, expected {features.input_ids.shape + (len(labels),)}")
    predicted = [[""] * len(s.chars) for s in sentences]
    best = logits.argmax(axis=2)
    for row in range(len(features)):
        sentence = predicted[features.sentence_index[row]]
        for position in np.flatnonzero(features.token_is_max_context[row]):
            sentence[features.char_start[row] + position - 1] = labels[best[row, position]]
    return predicted


def entities(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """The (start, end exclusive, type) chunks of one BIO sequence, read as conlleval does."""
    chunks, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, tag_kind = tag.partition("-")
        continues = prefix == "I" and tag_kind == kind
        if start is not None and not continues:
            chunks.add((start, i, kind))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, tag_kind
    return chunks


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision, recall and F1 (×100) over all sentences, and per entity type:
    an entity counts as found only with the same start, end and type."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    counts: dict[str, list[int]] = {}  # type -> [gold, predicted, correct]
    for i, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {i}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        want, got = entities(gold_tags), entities(predicted_tags)
        for index, group in ((0, want), (1, got), (2, want & got)):
            for _, _, kind in group:
                counts.setdefault(kind, [0, 0, 0])[index] += 1

    def prf(n_gold, n_predicted, n_correct):
        precision = n_correct / n_predicted if n_predicted else 0.0
        recall = n_correct / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": 100 * precision, "recall": 100 * recall, "F1": 100 * f1,
                "gold": n_gold, "predicted": n_predicted, "correct": n_correct}

    totals = [sum(c[k] for c in counts.values()) for k in range(3)]
    return {**prf(*totals), "per_type": {kind: prf(*c) for kind, c in sorted(counts.items())}}
