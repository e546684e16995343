"""CJRC (CAIL2019) scorer: hand-computed cases of the official semantics, and the real dev file."""
import json

import pytest

from cnbert.errors import DataError
from cnbert.eval.cjrc_metric import (cjrc_char_f1, cjrc_exact, cjrc_normalize, cjrc_question_scores,
                                     evaluate_cjrc, format_cjrc_scores)
from conftest import data_file


def test_normalize_keeps_letters_and_digits_only():
    # Full-width Ａ lower-cases to ａ (a letter), １ is a digit; "，", "-" and "。" go.
    assert cjrc_normalize("Ａ１，b-2。") == "ａ１b2"
    assert cjrc_normalize("人民币800元（整）") == "人民币800元整"
    assert cjrc_normalize("YES") == "yes"


def test_char_f1_is_bag_of_characters():
    # gold 北京市 (3 chars), pred 北京 (2): common 2, P = 1, R = 2/3, F1 = (4/3)/(5/3) = 0.8
    assert cjrc_char_f1("北京市", "北京") == pytest.approx(0.8)
    # Order does not matter for F1, but it does for EM.
    assert cjrc_char_f1("北京", "京北") == 1.0 and cjrc_exact("北京", "京北") == 0
    # Multiset overlap: gold 哈哈哈, pred 哈 -> common min(3, 1) = 1, P = 1, R = 1/3, F1 = 0.5
    assert cjrc_char_f1("哈哈哈", "哈") == pytest.approx(0.5)
    assert cjrc_char_f1("北京", "上海") == 0.0


def test_empty_answers_agree_only_with_empty_answers():
    assert cjrc_char_f1("", "") == 1.0 and cjrc_exact("", "") == 1
    # A prediction that is only punctuation normalises to "" and so equals "unknown".
    assert cjrc_char_f1("", "。") == 1.0 and cjrc_exact("", "。") == 1
    assert cjrc_char_f1("", "没有") == 0.0 and cjrc_exact("", "没有") == 0
    assert cjrc_char_f1("北京", "") == 0.0


def test_leave_one_out_over_three_golds():
    golds = ["夫妻感情破裂", "因夫妻感情破裂", "夫妻感情破裂"]
    # pred = golds[1]. Leaving out gold 0: best of {因夫妻感情破裂, 夫妻感情破裂} -> EM 1, F1 1.
    # Leaving out gold 1: best of {夫妻感情破裂 ×2} -> EM 0, F1: common 6, P = 6/7, R = 1,
    # F1 = (12/7)/(13/7) = 12/13. Leaving out gold 2: EM 1, F1 1.
    # EM = (1 + 0 + 1)/3 = 2/3, F1 = (1 + 12/13 + 1)/3 = 38/39.
    em, f1 = cjrc_question_scores(golds, "因夫妻感情破裂")
    assert em == pytest.approx(2 / 3)
    assert f1 == pytest.approx(38 / 39)
    # pred = golds[0] (equal to gold 2): every leave-one-out set still holds an equal gold.
    assert cjrc_question_scores(golds, "夫妻感情破裂") == (1.0, 1.0)


def test_single_gold_is_scored_directly():
    assert cjrc_question_scores(["北京市"], "北京") == (0, pytest.approx(0.8))


def test_yes_no_and_unknown():
    # Golds YES, YES, NO. "YES": each leave-one-out set keeps a YES -> EM 1.
    assert cjrc_question_scores(["YES", "YES", "NO"], "YES") == (1.0, 1.0)
    assert cjrc_question_scores(["YES", "YES", "NO"], "yes") == (1.0, 1.0)
    # "NO": sets {YES, NO}, {YES, NO}, {YES, YES} -> 1, 1, 0 -> 2/3; "no" vs "yes" share no
    # character, so F1 follows EM.
    em, f1 = cjrc_question_scores(["YES", "YES", "NO"], "NO")
    assert em == pytest.approx(2 / 3) and f1 == pytest.approx(2 / 3)
    assert cjrc_question_scores(["YES", "YES", "YES"], "是") == (0.0, 0.0)
    # Unknown is the empty string; a question with no answers has the gold [""].
    assert cjrc_question_scores(["", "", ""], "") == (1.0, 1.0)
    assert cjrc_question_scores([], "") == (1, 1.0)
    assert cjrc_question_scores([], "YES") == (0, 0.0)


def _gold(items):
    """A CJRC gold file from [(domain, [(id, [answer texts])])]."""
    return {"version": "1.0", "data": [
        {"caseid": str(n), "domain": domain, "paragraphs": [{"context": "", "casename": "", "qas": [
            {"id": qid, "question": "?", "is_impossible": "false",
             "answers": [{"text": text, "answer_start": -1} for text in texts]}
            for qid, texts in questions]}]}
        for n, (domain, questions) in enumerate(items)]}


def test_evaluate_reports_each_domain_and_overall_with_counts():
    gold = _gold([
        ("civil", [("c1", ["北京市", "北京市", "北京市"]), ("c2", ["YES", "YES", "NO"])]),
        ("criminal", [("k1", ["", "", ""]), ("k2", ["上海"])]),
        ("civil", [("c3", [])]),
    ])
    predictions = {"c1": "北京", "c2": "NO", "k1": "", "c3": "有"}  # k2 missing
    scores = evaluate_cjrc(gold, predictions)
    # c1: every leave-one-out set is {北京市, 北京市}: EM 0, F1 0.8.  c2: EM 2/3, F1 2/3 (above).
    # c3: gold [""], pred 有: EM 0, F1 0.  civil: EM 100·(2/3)/3 = 22.22, F1 100·(0.8 + 2/3)/3 = 48.89
    # k1: EM 1, F1 1.  k2: missing, 0 but counted.  criminal: EM 50, F1 50.
    # overall: EM 100·(2/3 + 1)/5 = 33.33, F1 100·(0.8 + 2/3 + 1)/5 = 49.33
    assert scores["civil"]["qas"] == 3 and scores["criminal"]["qas"] == 2 and scores["overall"]["qas"] == 5
    assert scores["civil"]["em"] == pytest.approx(100 * (2 / 3) / 3)
    assert scores["civil"]["f1"] == pytest.approx(100 * (0.8 + 2 / 3) / 3)
    assert scores["criminal"]["em"] == pytest.approx(50.0) and scores["criminal"]["f1"] == pytest.approx(50.0)
    assert scores["overall"]["em"] == pytest.approx(100 * (5 / 3) / 5)
    assert scores["overall"]["f1"] == pytest.approx(100 * (0.8 + 2 / 3 + 1) / 5)
    assert format_cjrc_scores(scores) == {
        "civil": {"em": 22.2, "f1": 48.9, "qas": 3},
        "criminal": {"em": 50.0, "f1": 50.0, "qas": 2},
        "overall": {"em": 33.3, "f1": 49.3, "qas": 5},
    }


@pytest.mark.parametrize("gold, problem", [
    (_gold([("family", [("f1", ["a"])])]), "question 'f1': domain of its data item is 'family'"),
    ({"data": [{"paragraphs": [{"qas": [{"id": "n1", "answers": []}]}]}]},
     "question 'n1': domain of its data item is None"),
    (_gold([("civil", [("c1", ["a"])]), ("criminal", [("c1", ["b"])])]), "question 'c1': id appears twice"),
    ({"data": []}, "the gold file has no questions"),
])
def test_bad_gold_data_names_the_file_and_the_question(gold, problem):
    with pytest.raises(DataError, match="^dev.json: ") as info:
        evaluate_cjrc(gold, {}, source="dev.json")
    assert problem in str(info.value)


def _real_dev_questions():
    gold = json.loads(data_file("cjrc/dev_ground_truth.json").read_text(encoding="utf-8"))
    questions = [(item["domain"], qa["id"], [answer["text"] for answer in qa["answers"]])
                 for item in gold["data"] for qa in item["paragraphs"][0]["qas"]]
    return gold, questions


def _letters_and_digits(text):
    return "".join(char for char in text.lower() if char.isalpha() or char.isdigit())


@pytest.mark.data
def test_first_gold_prediction_scores_92_5_em_on_real_dev():
    """Every dev question has 3 golds. Predicting gold 0: the two leave-one-out sets that keep
    gold 0 give EM 1; the set {gold 1, gold 2} gives 1 only if one of them equals gold 0. So a
    question scores (2 + [gold 0 matches gold 1 or 2]) / 3, and overall EM is at least 66.7 and
    is 100 only when annotators always agree: they agree with annotator 0 on 77.5 % of questions
    here, which gives (2 + 0.775)/3 = 92.5 %."""
    gold, questions = _real_dev_questions()
    assert len(questions) == 6000 and all(len(golds) == 3 for _, _, golds in questions)
    scores = evaluate_cjrc(gold, {qid: golds[0] for _, qid, golds in questions})
    agreeing = sum(_letters_and_digits(golds[0]) in {_letters_and_digits(g) for g in golds[1:]}
                   for _, _, golds in questions)
    assert scores["overall"]["em"] == pytest.approx(100 * (2 * 6000 + agreeing) / 3 / 6000, rel=1e-12)
    # Measured: EM 92.5056 (4651 agreeing questions), F1 97.8187; civil EM 94.1, criminal 90.9.
    assert agreeing == 4651
    assert 92.50 < scores["overall"]["em"] < 92.51
    assert 97.81 < scores["overall"]["f1"] < 97.82
    assert format_cjrc_scores(scores) == {
        "civil": {"em": 94.1, "f1": 98.2, "qas": 3000},
        "criminal": {"em": 90.9, "f1": 97.5, "qas": 3000},
        "overall": {"em": 92.5, "f1": 97.8, "qas": 6000},
    }


@pytest.mark.data
def test_constant_yes_and_unknown_predictions_on_real_dev_match_closed_form():
    """With a constant prediction p and 3 golds of which k equal p (after normalisation), the
    leave-one-out EM is 1 for k >= 2, 2/3 for k = 1 and 0 for k = 0. For p = "" F1 equals EM
    (an empty side gives F1 1 exactly when both are empty)."""
    gold, questions = _real_dev_questions()
    loo_em = {0: 0.0, 1: 2 / 3, 2: 1.0, 3: 1.0}
    for constant in ("YES", ""):
        scores = evaluate_cjrc(gold, {qid: constant for _, qid, _ in questions})
        target = _letters_and_digits(constant)
        expected = sum(loo_em[sum(_letters_and_digits(g) == target for g in golds)]
                       for _, _, golds in questions)
        assert scores["overall"]["em"] == pytest.approx(100 * expected / 6000)
        if constant == "":
            assert scores["overall"]["f1"] == pytest.approx(scores["overall"]["em"])


def test_normalisation_keeps_letters_and_digits_not_every_alphanumeric():
    # Ⅱ, 〇 (letter numbers) and ½ (a number) are alphanumeric but neither isalpha nor isdigit: the
    # official scorer drops them, so "Ⅰ型" matches the dev gold "Ⅱ型" (isalnum would keep them)
    assert cjrc_normalize("Ⅱ型〇½") == "型"
    assert cjrc_question_scores(["Ⅱ型糖尿病"], "Ⅰ型糖尿病") == (1, 1.0)


def test_two_gold_answers_are_scored_leave_one_out():
    # without the first gold the best is 上海 (0), without the second 北京 (1): mean 0.5
    assert cjrc_question_scores(["北京", "上海"], "北京") == (0.5, 0.5)


def test_a_missing_prediction_scores_zero_even_where_the_answer_is_unknown():
    gold = {"data": [{"domain": "criminal", "paragraphs": [{"context": "", "qas": [
        {"id": "k1", "answers": [{"text": "", "answer_start": -1}] * 3},
        {"id": "k2", "answers": [{"text": "上海", "answer_start": 0}]}]}]}]}
    # k1 has no prediction: 0, and counted (read as "unknown" it would score 100)
    assert evaluate_cjrc(gold, {"k2": "上海"})["criminal"] == {"em": 50.0, "f1": 50.0, "qas": 2}
