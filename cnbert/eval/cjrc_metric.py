"""CJRC (CAIL2019 reading comprehension) EM / F1 with the semantics of the official scorer.

The official script (CAIL2019 阅读理解/evaluate/evaluate.py) is derived from CoQA's: answers are
compared character by character after keeping only letters and digits, and a question with
several gold answers is scored leave-one-out. YES / NO answers are the literal strings "YES" /
"NO" (normalised to "yes" / "no") and "unknown" is the empty string.

A question without a prediction scores 0 and still counts in `qas`, as in the official, which
skips it when scoring but divides by every gold question of the domain.
"""
from collections import Counter

from cnbert.errors import DataError
from cnbert.eval.predictions import read_gold_questions

DOMAINS = ("civil", "criminal")


def cjrc_normalize(text):
    """Lower-case and keep only characters that are digits or letters (CJK ideographs are letters)."""
    return "".join(char for char in text.lower() if char.isdigit() or char.isalpha())


def cjrc_exact(gold, prediction):
    return int(cjrc_normalize(gold) == cjrc_normalize(prediction))


def cjrc_char_f1(gold, prediction):
    """Bag-of-characters F1 of the normalised strings; two empty answers agree (F1 1)."""
    gold_chars = list(cjrc_normalize(gold))
    prediction_chars = list(cjrc_normalize(prediction))
    if not gold_chars or not prediction_chars:
        return float(gold_chars == prediction_chars)
    common = sum((Counter(gold_chars) & Counter(prediction_chars)).values())
    if common == 0:
        return 0.0
    precision = 1.0 * common / len(prediction_chars)
    recall = 1.0 * common / len(gold_chars)
    return (2 * precision * recall) / (precision + recall)


def cjrc_question_scores(golds, prediction):
    """(EM, F1) of one question. With n > 1 golds: for each i the best over the other n - 1 golds,
    averaged over i, so a prediction is never judged against the very reference it may copy."""
    golds = list(golds) or [""]
    if len(golds) == 1:
        return cjrc_exact(golds[0], prediction), cjrc_char_f1(golds[0], prediction)
    em_sum = 0.0
    f1_sum = 0.0
    for i in range(len(golds)):
        others = golds[:i] + golds[i + 1:]
        em_sum += max(cjrc_exact(gold, prediction) for gold in others)
        f1_sum += max(cjrc_char_f1(gold, prediction) for gold in others)
    return em_sum / len(golds), f1_sum / len(golds)


def evaluate_cjrc(gold_data, predictions, source="<gold data>"):
    """Score `predictions` ({question id: answer}) against a CJRC gold file.

    Returns {"civil", "criminal", "overall"}, each {"em", "f1"} (×100, unrounded) and "qas" (the
    number of gold questions). `source` names the gold file in errors.
    """
    questions = read_gold_questions(gold_data, source)
    if not questions:
        raise DataError(source, None, "the gold file has no questions")
    totals = {domain: {"em": 0.0, "f1": 0.0, "qas": 0} for domain in DOMAINS}
    for question in questions:
        if question.domain not in DOMAINS:
            raise DataError(source, f"question {question.id!r}",
                            f"domain of its data item is {question.domain!r}, expected one of {DOMAINS}")
        total = totals[question.domain]
        total["qas"] += 1
        if question.id in predictions:
            em, f1 = cjrc_question_scores(question.answers, predictions[question.id])
            total["em"] += em
            total["f1"] += f1
    overall = {key: sum(totals[domain][key] for domain in DOMAINS) for key in ("em", "f1", "qas")}
    return {name: _percentages(total) for name, total in (*totals.items(), ("overall", overall))}


def _percentages(total):
    # Same order of operations as the official (sum / count * 100) so rounding agrees with it.
    count = max(1, total["qas"])
    return {"em": total["em"] / count * 100, "f1": total["f1"] / count * 100, "qas": total["qas"]}


def format_cjrc_scores(scores):
    """The official report: em / f1 rounded to one decimal, per domain and overall."""
    return {name: {"em": round(part["em"], 1), "f1": round(part["f1"], 1), "qas": part["qas"]}
            for name, part in scores.items()}
