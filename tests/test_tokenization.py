"""ChineseBertTokenizer against the reference: Google BERT's tokenizer as transformers ships it.

In transformers 5 `transformers.BertTokenizer` is itself backed by the `tokenizers` library (what
cnbert uses), so the reference here is the slow pure-Python implementation, `BertTokenizerLegacy`
(BasicTokenizer + WordpieceTokenizer), with do_lower_case=True as the Chinese checkpoints use.

Offsets are checked strictly (`offset_problems`): the tokens are cut into clusters of tokens whose
offsets overlap (one token almost always; several when one source character normalises to several
characters, e.g. a Hangul syllable NFD-decomposes into jamo that become separate pieces). For every
cluster, the concatenated token surfaces ("##" removed: a continuation piece's slice read alone
would tokenise as a word start) must equal the reference's normalisation of the sliced text (text
cleaning, lower-casing, NFD accent stripping); a cluster of several tokens is allowed only where that
normalisation lengthens the text. An [UNK] must cover exactly one pre-tokenised word: its slice
tokenises to [UNK] alone and joined with either neighbouring token's slice gives two words. Text
between clusters must normalise to whitespace only (nothing is silently dropped).
"""
import functools
import json
import random
import time

import pytest
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from cnbert.errors import DataError
from cnbert.tokenization import ChineseBertTokenizer, bundled_vocab_path, load_vocab
from conftest import FIXTURES, data_file

TRICKY_TEXTS = [
    "Ｈｅｌｌｏ Café e\u0301 İstanbul",  # full-width, precomposed and combining accents, dotted capital I
    "한국어 대한민국",  # Hangul: one syllable -> several jamo pieces sharing one character's offsets
    "\uf900\uf901豈",  # CJK compatibility ideographs (canonically mapped by NFD)
    "😀🀄 𠀀",  # outside the BMP: offsets count characters, not UTF-16 units
    "a\x00b\u200bc\ufffd d",  # characters removed by text cleaning inside a word
    "x" * 120 + " y",  # a word over 100 characters becomes [UNK]
    "ﬁne Straße ǅ",
    "\u3000全角\u3000空格\u2028行",
    "ＡＢＣ１２３％ ⅰⅱ ①② สำนัก 1928～1933年",
]


@pytest.fixture(scope="module")
def tokenizer():
    return ChineseBertTokenizer()


@pytest.fixture(scope="module")
def reference():
    return BertTokenizerLegacy(str(bundled_vocab_path()), do_lower_case=True)


def reference_ids(reference, text):
    return reference.convert_tokens_to_ids(reference.tokenize(text))


def reference_word_piece_ids(reference, text):
    """The reference's own two stages, called directly: what `reference.tokenize` does for text that
    holds no special-token literal, without its added-token splitting (a third of the time)."""
    unk = reference.vocab["[UNK]"]
    return [reference.vocab.get(piece, unk) for word in reference.basic_tokenizer.tokenize(text)
            for piece in reference.wordpiece_tokenizer.tokenize(word)]


def normalise(reference, text):
    """The reference's normalisation of one word: clean, lower-case, strip accents (NFD, drop Mn)."""
    return _normaliser(reference)(text)


@functools.cache
def _normaliser(reference):
    basic = reference.basic_tokenizer

    @functools.lru_cache(maxsize=1 << 16)  # the same pieces recur throughout a data set
    def run(text):
        return basic._run_strip_accents(basic._clean_text(text).lower())
    return run


def offset_problems(text, encoded, reference):
    """Every way the tokens' offsets fail to slice back to them (see the module docstring)."""
    problems = []
    clusters = []  # [start, end, [token indices]]
    for i, (start, end) in enumerate(encoded.offsets):
        if not 0 <= start < end <= len(text):
            problems.append(f"token {i} {encoded.tokens[i]!r}: offsets {(start, end)} outside the text")
            continue
        if clusters and start < clusters[-1][1]:
            clusters[-1][1] = max(clusters[-1][1], end)
            clusters[-1][2].append(i)
        else:
            clusters.append([start, end, [i]])
    covered_to = 0
    for number, (start, end, members) in enumerate(clusters):
        if start < covered_to:
            problems.append(f"tokens {members}: start {start} before the previous token's end {covered_to}")
        if start > covered_to and normalise(reference, text[covered_to:start]).strip():
            problems.append(f"characters {covered_to}..{start} {text[covered_to:start]!r} belong to no token")
        covered_to = end
        piece = text[start:end]
        tokens = [encoded.tokens[i] for i in members]
        if "[UNK]" in tokens:
            neighbours = [clusters[n] for n in (number - 1, number + 1) if 0 <= n < len(clusters)]
            whole_word = (tokens == ["[UNK]"] and reference.tokenize(piece) == ["[UNK]"]
                          and all(len(reference.basic_tokenizer.tokenize(text[min(start, s):max(end, e)])) == 2
                                  for s, e, _ in neighbours))
            if not whole_word:
                problems.append(f"[UNK] at {(start, end)} {piece!r} is not one whole word ({tokens})")
            continue
        surface = "".join(t[2:] if t.startswith("##") else t for t in tokens)
        expected = normalise(reference, piece)
        if surface != expected:
            problems.append(f"tokens {tokens} at {(start, end)}: slice {piece!r} normalises to {expected!r}")
        elif len(tokens) > 1 and len(expected) <= len(piece):
            problems.append(f"tokens {tokens} share {piece!r}, which normalisation does not lengthen")
    if normalise(reference, text[covered_to:]).strip():
        problems.append(f"characters from {covered_to} {text[covered_to:]!r} belong to no token")
    return problems


# ---------------------------------------------------------------------------------------------
# Vocabulary

def test_bundled_vocab_has_21128_entries_and_the_standard_special_ids(tokenizer):
    assert tokenizer.vocab_size == 21128
    assert [tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 100, 101, 102, 103]
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id) == (0, 101, 102)
    # Lines 344 and 13503 hold U+2028; reading the file with str.splitlines() would add two entries
    # and shift every later id.
    assert ["\u2028" in tokenizer.convert_ids_to_tokens([i])[0] for i in (343, 13502)] == [True, True]
    text = bundled_vocab_path().read_text(encoding="utf-8")
    assert len(text.splitlines()) == 21130
    assert tokenizer.convert_ids_to_tokens([13503])[0] == text.split("\n")[13503]


def test_load_vocab_reports_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_vocab(tmp_path / "missing.txt")
    duplicate = tmp_path / "dup.txt"
    duplicate.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\na\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 6.*already appeared on line 5"):
        load_vocab(duplicate)
    no_sep = tmp_path / "nosep.txt"
    no_sep.write_text("[PAD]\n[UNK]\n[CLS]\na\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"\[SEP\]"):
        load_vocab(no_sep)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("[PAD]\n[UNK]\n[CLS]\n[SEP]\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=fr"{latin1}: line 5 \(byte 27\): the vocabulary file is not UTF-8 text"):
        load_vocab(latin1)
    with pytest.raises(DataError, match=f"{tmp_path}: cannot read the vocabulary file"):
        load_vocab(tmp_path)


# ---------------------------------------------------------------------------------------------
# Ids and offsets (fixture texts and tricky strings: always run)

def fixture_texts():
    texts = []
    for name in ("mrc_cmrc2018_sample.json", "mrc_drcd_sample.json"):
        for article in json.loads((FIXTURES / name).read_text(encoding="utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                texts.append(paragraph["context"])
                texts.extend(qa["question"] for qa in paragraph["qas"])
    return texts


def test_ids_and_offsets_match_the_reference_on_fixtures_and_tricky_text(tokenizer, reference):
    texts = fixture_texts() + TRICKY_TEXTS
    for text, encoded in zip(texts, tokenizer.encode_batch(texts)):
        assert encoded.ids == reference_ids(reference, text), text
        assert encoded.tokens == tokenizer.convert_ids_to_tokens(encoded.ids)
        assert offset_problems(text, encoded, reference) == [], text
    assert tokenizer.encode(TRICKY_TEXTS[1]) == tokenizer.encode_batch([TRICKY_TEXTS[1]])[0]
    assert tokenizer.encode_ids_batch(texts) == [encoded.ids for encoded in tokenizer.encode_batch(texts)]


def test_a_token_ends_after_the_combining_marks_that_follow_it(tokenizer):
    # accent stripping removes the marks from the tokens, but a slice must keep them
    assert tokenizer.encode("ee\u0301 x\u0301\u0302 \u0301").offsets == [(0, 3), (4, 7)]
    assert tokenizer.encode("中\u0301文").offsets == [(0, 2), (2, 3)]


def test_hangul_pieces_share_the_offsets_of_their_syllable(tokenizer):
    encoded = tokenizer.encode("한국")
    assert encoded.tokens == ["ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ"]
    assert encoded.offsets == [(0, 1)] * 3 + [(1, 2)] * 3


def test_offset_check_catches_wrong_offsets(tokenizer, reference):
    # The checker must be able to fail: shift one offset, merge an [UNK] with its neighbour.
    text = "范廷颂于1919年 Straße"
    encoded = tokenizer.encode(text)
    shifted = type(encoded)(encoded.ids, encoded.tokens, [(s + 1, e + 1) if i == 1 else (s, e)
                                                          for i, (s, e) in enumerate(encoded.offsets)])
    assert offset_problems(text, shifted, reference)
    unk_text = "ab ﬁne"
    unk = tokenizer.encode(unk_text)
    assert unk.tokens == ["ab", "[UNK]"]
    widened = type(unk)(unk.ids, unk.tokens, [(0, 2), (1, 6)])
    assert offset_problems(unk_text, widened, reference)


def test_special_token_literals_in_text_are_plain_text(tokenizer, reference):
    # A deliberate difference from the slow reference, which turns "[SEP]" typed in a passage into
    # the separator token: text is text here, so a passage cannot inject special tokens.
    assert reference.tokenize("[SEP]x") == ["[SEP]", "x"]
    assert tokenizer.encode("[SEP]x").tokens == ["[", "sep", "]", "x"]


def test_capital_sigma_ending_a_word_lower_cases_to_final_sigma_as_in_the_reference(tokenizer, reference):
    # str.lower() gives ς for a Σ that ends a word and σ elsewhere; the two have different ids.
    assert tokenizer.encode("ΑΣ ΣΑ").tokens == ["α", "##ς", "σ", "##α"]
    assert tokenizer.encode("ΑΣ ΣΑ").offsets == [(0, 1), (1, 2), (3, 4), (4, 5)]
    # Random texts over the characters that decide the context: letters, Σ, what the reference
    # skips (a combining mark, an apostrophe, a full stop, a zero-width space), what its cleaning
    # removes (a control character, U+FFFD), and what ends a word (spaces, a CJK character).
    rng = random.Random(0)
    alphabet = ["Σ", "Σ", "Α", "ω", "Ά", "\u0301", "'", ".", "\u200b", "\x01", "\ufffd", " ", "\t", "中", "x"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(3000)]
    for text, encoded in zip(texts, tokenizer.encode_batch(texts)):
        assert encoded.ids == reference_ids(reference, text), repr(text)
    assert sum("##ς" in tokenizer.convert_ids_to_tokens(reference_ids(reference, t)) for t in texts) > 100


# ---------------------------------------------------------------------------------------------
# siBert's tokenizer: full-width forms mapped to half-width before WordPiece

def sibert_normalize_text(text):
    """siBert's BasicTokenizer.normalize_text (ewrfcas/SiBert_tensorflow tokenization_char.py), as written there."""
    out = ""
    for char in text:
        code = ord(char)
        if code == 12288:
            code = 32
        elif 65281 <= code <= 65374:
            code -= 65248
        out += chr(code)
    return out


def assert_sibert_tokenization(texts, reference):
    """Ids as the reference gives for siBert-normalised text; offsets slice the text as given, and
    slice the normalised text exactly as the reference's checks require."""
    sibert = ChineseBertTokenizer(fullwidth_to_halfwidth=True)
    for text, encoded in zip(texts, sibert.encode_batch(texts)):
        normalized = sibert_normalize_text(text)
        assert encoded.ids == reference_word_piece_ids(reference, normalized), text
        assert offset_problems(normalized, encoded, reference) == [], text


def test_fullwidth_forms_are_half_width_for_sibert_and_offsets_slice_the_original(tokenizer, reference):
    text = "ＣＭＲＣ２０１８，阅读\u3000理解！"
    sibert = ChineseBertTokenizer(fullwidth_to_halfwidth=True)
    encoded = sibert.encode(text)
    assert encoded.tokens == ["cm", "##rc", "##20", "##18", ",", "阅", "读", "理", "解", "!"]
    assert encoded.ids == tokenizer.encode("CMRC2018,阅读 理解!").ids
    assert [text[a:b] for a, b in encoded.offsets] == ["ＣＭ", "ＲＣ", "２０", "１８", "，", "阅", "读", "理", "解", "！"]
    # Google BERT's tokenizer keeps the full-width forms
    assert tokenizer.encode(text).tokens[:4] == ["ｃ", "##ｍ", "##ｒ", "##ｃ"]
    assert_sibert_tokenization(fixture_texts() + TRICKY_TEXTS, reference)


@pytest.mark.data
def test_sibert_tokenization_matches_the_reference_on_real_fullwidth_text(reference):
    forms = {chr(code) for code in (0x3000, *range(0xFF01, 0xFF5F))}
    texts = [t for t in real_texts() if forms.intersection(t)][:3000]
    assert len(texts) == 3000  # CMRC 2018 and DRCD are full of full-width punctuation and digits
    assert_sibert_tokenization(texts, reference)


# ---------------------------------------------------------------------------------------------
# Every context and question of CMRC 2018 train + dev and DRCD dev

def real_texts():
    texts = []
    for relative in ("cmrc2018/cmrc2018_train.json", "cmrc2018/cmrc2018_dev.json", "drcd/DRCD_dev.json"):
        data = json.loads(data_file(relative).read_text(encoding="utf-8"))["data"]
        for article in data:
            for paragraph in article["paragraphs"]:
                texts.append(paragraph["context"])
                texts.extend(qa["question"] for qa in paragraph["qas"])
    return texts


@pytest.mark.data
@pytest.mark.slow
def test_ids_and_offsets_match_the_reference_on_cmrc2018_and_drcd(tokenizer, reference):
    texts = real_texts()
    assert len(texts) == (2403 + 10142) + (848 + 3219) + (1000 + 3524)
    started = time.perf_counter()
    encoded = tokenizer.encode_batch(texts)
    fast_seconds = time.perf_counter() - started
    assert not any(special in t for t in texts for special in ("[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]"))
    id_mismatches = [t for t, e in zip(texts, encoded) if e.ids != reference_word_piece_ids(reference, t)]
    assert id_mismatches == []
    offset_failures = {t: p for t, e in zip(texts, encoded) if (p := offset_problems(t, e, reference))}
    assert offset_failures == {}
    # Measured: 61 adjacent token pairs share a character (jamo of Hangul syllables) and 7561 tokens
    # are [UNK] (Thai, Arabic, emoji, over-long words...), so the strict cluster and [UNK] rules
    # above were exercised, not skipped.
    shared = sum(1 for e in encoded for a, b in zip(e.offsets, e.offsets[1:]) if b[0] < a[1])
    unknown = sum(e.tokens.count("[UNK]") for e in encoded)
    assert (shared, unknown) == (61, 7561)
    assert fast_seconds < 30


def test_a_cased_tokenizer_keeps_accents():
    # BertTokenizer(do_lower_case=False) neither lower-cases nor strips accents: café is then not
    # in the Chinese vocabulary
    assert ChineseBertTokenizer(do_lower_case=False).encode("café").tokens == ["[UNK]"]
    assert ChineseBertTokenizer(do_lower_case=True).encode("café").tokens == ["cafe"]
