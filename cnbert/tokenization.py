"""Chinese BERT tokenisation on the `tokenizers` library's fast WordPiece, with character offsets.

Gives the same ids as Google's BERT tokenizer (`transformers.BertTokenizer`, the reference):
text cleaning, CJK characters split one per token, punctuation split, lower-casing and accent
stripping as `do_lower_case` says, greedy longest-match WordPiece with `[UNK]` for words that
cannot be covered (or are longer than 100 characters). Offsets are character offsets into the
text as given, so an answer is always sliced from the original context, never rebuilt from pieces.

siBert's tokenizer (ewrfcas/SiBert_tensorflow tokenization_char.py, `normalize_text`) first maps
full-width forms to half-width: U+3000 to a space and U+FF01..U+FF5E to U+0021..U+007E
(`fullwidth_to_halfwidth=True`). The map is one character to one character, so offsets still point
into the text as given.
"""
from __future__ import annotations

import dataclasses
import unicodedata
from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

from cnbert.errors import DataError
from cnbert.io_utils import read_text_file

CLS, SEP, PAD, UNK, MASK = "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"

# siBert's normalize_text: the ideographic space and the full-width ASCII block to their ASCII forms.
FULLWIDTH_TO_HALFWIDTH = {0x3000: 0x20, **{code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}}


def bundled_vocab_path() -> Path:
    """The standard 21128-entry Chinese BERT vocabulary (Google BERT / HIT, Apache-2.0)."""
    return Path(str(resources.files("cnbert") / "resources" / "vocab.txt"))


def load_vocab(path) -> dict[str, int]:
    """Read a vocab.txt: one token per line, id = line number.

    Split on "\\n" only: the Chinese vocabulary has tokens containing U+2028 (LINE SEPARATOR),
    which `str.splitlines()` would treat as line breaks, shifting every later id.
    """
    path = Path(path)
    lines = read_text_file(path, "vocabulary file").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for line_no, raw in enumerate(lines, start=1):
        token = raw.rstrip("\r")
        if token in vocab:
            raise DataError(path, f"line {line_no}", f"token {token!r} already appeared on line {vocab[token] + 1}")
        vocab[token] = line_no - 1
    for special in (CLS, SEP, PAD, UNK):
        if special not in vocab:
            raise DataError(path, "", f"vocabulary lacks the special token {special}")
    return vocab


def _is_removed_by_cleaning(ch: str) -> bool:
    # BERT's text cleaning drops NUL, U+FFFD and control/format characters (not tab or newlines)
    return ch in "\x00\ufffd" or (ch not in "\t\n\r" and unicodedata.category(ch).startswith("C"))


def _lower_final_sigmas(text: str) -> str:
    """`text` with each capital sigma that ends a word as lower-cased final sigma (ς).

    Google's tokenizer lower-cases with `str.lower()`, which turns Σ at a word's end into ς and
    elsewhere into σ (Unicode's Final_Sigma context); the fast normaliser lower-cases character by
    character and always gives σ, another id. The context is judged as the reference sees it,
    after cleaning removed its characters. ς lower-cases to itself, so the normaliser keeps it, and
    the one-for-one replacement keeps every offset."""
    if "Σ" not in text:
        return text
    kept = [i for i, ch in enumerate(text) if not _is_removed_by_cleaning(ch)]
    cleaned = "".join(text[i] for i in kept)
    lowered = cleaned.lower()
    characters = list(text)
    position = 0  # in `lowered`: a character may lower-case to several (İ to i̇)
    for i, ch in zip(kept, cleaned):
        width = len(ch.lower())
        if ch == "Σ" and lowered[position] == "ς":
            characters[i] = "ς"
        position += width
    return "".join(characters)


def _cover_trailing_marks(text: str, offsets) -> list[tuple[int, int]]:
    """Offsets with each token's end moved past the combining marks (Unicode category M) right
    after it that no token covers. Accent stripping drops such marks, so a token's end offset stops
    before them, and an answer sliced from the text would lose a final accent or vowel point
    (google-research/bert maps answers back to whole whitespace-separated words, which keep them)."""
    widened = [tuple(o) for o in offsets]
    next_starts = [start for start, _ in widened[1:]] + [len(text)]
    for i, ((start, end), next_start) in enumerate(zip(widened, next_starts)):
        if end < next_start:  # a gap: whitespace, or characters that normalisation removed
            while end < next_start and unicodedata.category(text[end]).startswith("M"):
                end += 1
            widened[i] = (start, end)
    return widened


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Word pieces of one text: ids, token strings and [start, end) character offsets."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]

    def __len__(self):
        return len(self.ids)


class ChineseBertTokenizer:
    """Fast WordPiece tokenizer for Chinese BERT checkpoints.

    `encode` returns word pieces without special tokens; callers lay out [CLS]/[SEP] themselves
    (the reading-comprehension features need the question and each window separately).
    fullwidth_to_halfwidth: map full-width forms to half-width first, as siBert's tokenizer does.
    """

    def __init__(self, vocab_file=None, do_lower_case: bool = True, fullwidth_to_halfwidth: bool = False):
        self.vocab_file = Path(vocab_file) if vocab_file is not None else bundled_vocab_path()
        self.do_lower_case = do_lower_case
        self.fullwidth_to_halfwidth = fullwidth_to_halfwidth
        self.vocab = load_vocab(self.vocab_file)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        tokenizer = Tokenizer(WordPiece(self.vocab, unk_token=UNK, max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=do_lower_case,
            lowercase=do_lower_case,
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tokenizer = tokenizer
        self._character_ids: dict[bool, dict[str, int]] = {}  # character_ids' lookups so far

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int:
        return self.vocab[token]

    @property
    def cls_id(self) -> int:
        return self.vocab[CLS]

    @property
    def sep_id(self) -> int:
        return self.vocab[SEP]

    @property
    def pad_id(self) -> int:
        return self.vocab[PAD]

    def encode(self, text: str) -> Encoded:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[Encoded]:
        return [
            Encoded(list(e.ids), list(e.tokens), _cover_trailing_marks(text, e.offsets))
            for text, e in zip(texts, self._encode_batch(texts))
        ]

    def encode_ids_batch(self, texts: list[str]) -> list[list[int]]:
        """The ids of encode_batch alone: half the work where tokens and offsets are not needed
        (classification)."""
        return [e.ids for e in self._encode_batch(texts)]

    def _encode_batch(self, texts: list[str]):
        # per-character maps keep every offset valid for the text as given
        normalised = [t.translate(FULLWIDTH_TO_HALFWIDTH) for t in texts] if self.fullwidth_to_halfwidth else texts
        if self.do_lower_case:
            normalised = [_lower_final_sigmas(t) for t in normalised]
        return self._tokenizer.encode_batch(normalised, add_special_tokens=False)

    def character_ids(self, characters) -> list[int]:
        """One id per character, for tagging character by character (NER): the character's word piece
        after the BERT normaliser, or [UNK] for one that normalises to nothing (a space, a control or
        zero-width character), so ids and tags stay aligned. Each character is a word of its own, so
        its id depends on nothing else: each distinct one is looked up once per tokenizer."""
        characters = list(characters)
        # keyed by the one setting read at call time (the normaliser's are fixed at construction)
        known = self._character_ids.setdefault(self.fullwidth_to_halfwidth, {})
        unseen = list(dict.fromkeys(c for c in characters if c not in known))
        if unseen:
            known.update(zip(unseen, self._look_up_characters(unseen)))
        return [known[c] for c in characters]

    def _look_up_characters(self, characters: list[str]) -> list[int]:
        words = [c.translate(FULLWIDTH_TO_HALFWIDTH) for c in characters] if self.fullwidth_to_halfwidth else characters
        encoding = self._tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
        ids = [self.vocab[UNK]] * len(characters)
        for token_id, word in zip(reversed(encoding.ids), reversed(encoding.word_ids)):
            ids[word] = token_id  # walking backwards leaves each word's first piece
        return ids

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.inv_vocab[int(i)] for i in ids]
