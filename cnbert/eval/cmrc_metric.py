"""CMRC 2018 F1 / EM with the semantics of the official v6 scorer (cmrc2018_evaluate.py).

DRCD is scored with the same functions against its original (traditional Chinese) file.
Details the official script fixes and this module keeps (all tested):
  * strings are lower-cased and stripped *before* punctuation is dropped, so "a ，" keeps the
    space before the comma and does not equal "a";
  * `……` is one of the 33 punctuation entries but, being two characters, never matches a single
    character: a lone `…` is kept (and in English text goes to the word tokenizer);
  * F1 uses the longest common *contiguous* run of segments, not the longest subsequence;
  * an empty segment list (empty prediction, or a gold that is all punctuation) gives F1 0, while
    EM compares strings: an empty prediction matches an empty-after-punctuation gold for EM 1.
One deliberate difference: the official calls `nltk.word_tokenize`, which first splits sentences
with the downloadable Punkt model; here the non-Chinese runs go straight to NLTK's Treebank word
tokenizer (`word_tokenize(..., preserve_line=True)`), which needs no downloaded data. The two only
differ when a run of non-Chinese text holds a sentence boundary inside it ("U.S. Army. The").
"""
import difflib
import functools

from cnbert.errors import DataError
from cnbert.eval.predictions import read_gold_questions

# The official list, in its order. "……" (two characters) is kept although it can never match.
SP_CHAR = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)
_SP_CHAR_SET = frozenset(SP_CHAR)


@functools.cache
def _word_tokenizer():
    # imported on first use, not with the module: scoring CMRC needs NLTK, importing cnbert does not
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def _is_cjk(char):
    # The official tests re.search('[\u4e00-\u9fa5]', char): the basic CJK block, up to U+9FA5.
    return "\u4e00" <= char <= "\u9fa5"


def cmrc_segments(text, remove_punct):
    """Mixed segmentation: each Chinese character (or punctuation mark of SP_CHAR) is a segment;
    runs of other characters are split into words by NLTK's Treebank tokenizer."""
    segments = []
    pending = []  # non-Chinese characters waiting to be word-tokenized

    def flush():
        if pending:
            segments.extend(_word_tokenizer().tokenize("".join(pending)))
            pending.clear()

    for char in text.lower().strip():
        is_punct = char in _SP_CHAR_SET
        if remove_punct and is_punct:
            continue
        if _is_cjk(char) or is_punct:
            flush()
            segments.append(char)
        else:
            pending.append(char)
    flush()
    return segments


def cmrc_remove_punctuation(text):
    """The string EM compares: lower-cased, stripped, then SP_CHAR characters dropped."""
    return "".join(char for char in text.lower().strip() if char not in _SP_CHAR_SET)


def longest_common_run(a, b):
    """Length of the longest contiguous run of items common to sequences `a` and `b`."""
    # Without junk heuristics SequenceMatcher.find_longest_match is exactly the longest common
    # substring of the two sequences.
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.find_longest_match(0, len(a), 0, len(b)).size


def cmrc_f1(prediction, golds):
    """Max over `golds` of the segment-level F1 of the longest common contiguous run."""
    prediction_segments = cmrc_segments(prediction, remove_punct=True)
    best = 0.0
    for gold in golds:
        gold_segments = cmrc_segments(gold, remove_punct=True)
        common = longest_common_run(gold_segments, prediction_segments)
        if common == 0:
            continue
        # Same arithmetic as the official, so sums agree with it to the last bit.
        precision = 1.0 * common / len(prediction_segments)
        recall = 1.0 * common / len(gold_segments)
        best = max(best, (2 * precision * recall) / (precision + recall))
    return best


def cmrc_em(prediction, golds):
    """1 if the prediction equals any gold after `cmrc_remove_punctuation`, else 0."""
    normalized = cmrc_remove_punctuation(prediction)
    return int(any(cmrc_remove_punctuation(gold) == normalized for gold in golds))


def prediction_key(question_id: str) -> str:
    """The predictions key a gold question is looked up by: as the official scorer, a gold id
    " Q1" looks up "Q1"."""
    return question_id.strip()


def evaluate_cmrc(gold_data, predictions, source="<gold data>"):
    """Score `predictions` ({question id: answer}) against a SQuAD-style CMRC 2018 / DRCD gold.

    Every gold question counts; a question without a prediction scores 0 and is counted in SKIP.
    Predictions for ids not in the gold are ignored, as the official does. Returns unrounded
    {"AVERAGE", "F1", "EM"} (×100) and integer {"TOTAL", "SKIP"}; `source` names the gold in errors.
    """
    questions = read_gold_questions(gold_data, source)
    if not questions:
        raise DataError(source, None, "the gold file has no questions")
    f1_sum = 0.0
    em_sum = 0
    skipped = 0
    for question in questions:
        if not question.answers:
            # The official takes max() over an empty list here and crashes.
            raise DataError(source, f"question {question.id!r}", "has no gold answers")
        query_id = prediction_key(question.id)
        if query_id not in predictions:
            skipped += 1
            continue
        prediction = predictions[query_id]
        f1_sum += cmrc_f1(prediction, question.answers)
        em_sum += cmrc_em(prediction, question.answers)
    f1 = 100.0 * f1_sum / len(questions)
    em = 100.0 * em_sum / len(questions)
    return {"AVERAGE": (em + f1) * 0.5, "F1": f1, "EM": em, "TOTAL": len(questions), "SKIP": skipped}


def format_cmrc_scores(scores, predictions_file):
    """The official printed record: scores as '%.3f' strings, counts as integers, then FILE."""
    return {
        "AVERAGE": "%.3f" % scores["AVERAGE"],
        "F1": "%.3f" % scores["F1"],
        "EM": "%.3f" % scores["EM"],
        "TOTAL": scores["TOTAL"],
        "SKIP": scores["SKIP"],
        "FILE": str(predictions_file),
    }
