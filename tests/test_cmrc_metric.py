"""CMRC 2018 / DRCD scorer: hand-computed cases of the official v6 semantics, and real-data checks.

Notation in the comments: segs(x) = cmrc_segments(x, remove_punct=True); for one gold,
F1 = 2·P·R / (P + R) with P = lcs / |segs(pred)|, R = lcs / |segs(gold)|, lcs = longest common
contiguous run of segments.
"""
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnbert.errors import DataError
from cnbert.eval.cmrc_metric import (SP_CHAR, cmrc_em, cmrc_f1, cmrc_remove_punctuation, cmrc_segments,
                                     evaluate_cmrc, format_cmrc_scores, longest_common_run)
from conftest import data_file


def test_sp_char_is_the_official_list_of_33_entries():
    assert SP_CHAR == ("-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
                       "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
                       "「", "」", "（", "）", "－", "～", "『", "』")
    assert "…" not in SP_CHAR and not set(",.!?()\"'") & set(SP_CHAR)
    # the closing quote is in the list, the opening one is not
    assert cmrc_em("’北京", ["北京"]) == 1 and cmrc_em("‘北京", ["北京"]) == 0


def test_chinese_characters_are_exactly_u4e00_to_u9fa5():
    # 㭴 㑩 (Extension A, in CMRC 2018 dev answers) and 鿏 鿐 (U+9FCF, U+9FD0) are outside the
    # official range: they go to the word tokenizer, where adjacent ones stay one word
    assert cmrc_segments("㭴㑩鿏鿐", remove_punct=True) == ["㭴㑩鿏鿐"]
    assert cmrc_f1("鿏鿐", ["鿏"]) == 0.0  # an upper bound of U+9FFF would give 2/3
    assert cmrc_f1("㭴㑩", ["㭴"]) == 0.0  # a lower bound of U+3400 would give 2/3


def test_mixed_segmentation_splits_chinese_by_character_and_english_by_word():
    assert cmrc_segments("2008年北京Olympic Games", remove_punct=True) == [
        "2008", "年", "北", "京", "olympic", "games"]
    # NLTK's Treebank rules, not whitespace: the clitic 's is its own word.
    assert cmrc_segments("the Apple's price", remove_punct=True) == ["the", "apple", "'s", "price"]


def test_punctuation_in_sp_char_is_dropped_or_kept_as_a_segment():
    # Full-width comma is in SP_CHAR: a segment of its own, or gone with remove_punct.
    assert cmrc_segments("北京，上海", remove_punct=False) == ["北", "京", "，", "上", "海"]
    assert cmrc_segments("北京，上海", remove_punct=True) == ["北", "京", "上", "海"]
    # The ASCII comma is not in SP_CHAR: it stays in the English buffer and NLTK splits it off.
    assert cmrc_segments("北京, 上海", remove_punct=True) == ["北", "京", ",", "上", "海"]


def test_removed_punctuation_does_not_separate_english_words():
    # The official drops the "，" before it could flush the buffer, so "games" and "a" merge.
    assert cmrc_segments("games，a", remove_punct=True) == ["gamesa"]
    # segs(pred) = [gamesa], segs(gold) = [games, a]: nothing in common, F1 = 0.
    assert cmrc_f1("games，a", ["games a"]) == 0.0


def test_lone_ellipsis_is_kept_because_sp_char_holds_only_the_double_one():
    assert cmrc_remove_punctuation("等等…") == "等等…"
    assert cmrc_remove_punctuation("等等……") == "等等……"  # two characters, neither equals "……"
    assert cmrc_segments("等等…", remove_punct=True) == ["等", "等", "…"]
    assert cmrc_em("等等…", ["等等"]) == 0
    # segs(pred) = [等, 等, …], segs(gold) = [等, 等]: lcs 2, P = 2/3, R = 1, F1 = (4/3)/(5/3) = 0.8
    assert cmrc_f1("等等…", ["等等"]) == pytest.approx(0.8)


def test_em_ignores_case_surrounding_space_and_sp_char_but_not_ascii_punctuation():
    assert cmrc_em("  OLYMPIC games ", ["Olympic Games"]) == 1
    assert cmrc_em("北京，上海。", ["北京上海"]) == 1
    assert cmrc_em("北京,上海", ["北京上海"]) == 0
    # Strip happens before punctuation removal: "a ，" keeps its space and becomes "a ".
    assert cmrc_em("a ，", ["a"]) == 0
    assert cmrc_em("，a", ["a"]) == 1


def test_f1_uses_the_longest_contiguous_run_not_the_longest_subsequence():
    # segs(pred) = [北, 大], segs(gold) = [北, 京, 大, 学]. Contiguous lcs = 1 (a subsequence
    # would give 2 and F1 2/3). P = 1/2, R = 1/4, F1 = 2·(1/8)/(3/4) = 1/3.
    assert cmrc_f1("北大", ["北京大学"]) == pytest.approx(1 / 3)
    assert longest_common_run(list("北大"), list("北京大学")) == 1


def test_f1_on_mixed_chinese_english_answer():
    # segs(pred) = [2008, 年, 北, 京, olympic, games] (6), segs(gold) = [北, 京, olympic, games] (4)
    # lcs 4: P = 4/6, R = 1, F1 = (4/3)/(5/3) = 0.8
    assert cmrc_f1("2008年北京Olympic Games", ["北京Olympic Games"]) == pytest.approx(0.8)
    assert cmrc_em("2008年北京Olympic Games", ["北京Olympic Games"]) == 0
    # "gum2006" is one English word, so it does not match "gum":
    # segs(pred) = [comic, gum2006, 年] (3), segs(gold) = [comic, gum] (2): lcs 1,
    # P = 1/3, R = 1/2, F1 = (1/3)/(5/6) = 0.4
    assert cmrc_f1("Comic Gum2006年", ["Comic Gum"]) == pytest.approx(0.4)


def test_f1_and_em_take_the_best_gold():
    # vs 北京市: lcs 2, P = 1, R = 2/3 -> F1 = (4/3)/(5/3) = 0.8; vs 中国北京: R = 1/2 -> F1 = 2/3
    assert cmrc_f1("北京", ["中国北京", "北京市"]) == pytest.approx(0.8)
    assert cmrc_em("北京", ["中国北京", "北京市"]) == 0
    assert cmrc_em("北京", ["中国北京", "北京。"]) == 1


def test_empty_prediction_scores_f1_zero_but_em_can_match_an_all_punctuation_gold():
    assert cmrc_f1("", ["北京"]) == 0.0 and cmrc_em("", ["北京"]) == 0
    assert cmrc_f1("   ", ["北京"]) == 0.0
    # The gold 《》 has no segments after punctuation removal, so F1 is 0 (the official's lcs is
    # 0), while the EM strings are both "".
    assert cmrc_f1("", ["《》"]) == 0.0
    assert cmrc_em("", ["《》"]) == 1


def _gold(questions):
    """A SQuAD-style gold file from [(id, [answer texts])]."""
    qas = [{"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in texts]}
           for qid, texts in questions]
    return {"version": "test", "data": [{"paragraphs": [{"context": "", "qas": qas}]}]}


def test_evaluate_counts_every_gold_question_and_skips_missing_predictions():
    gold = _gold([("q1", ["北京市", "北京"]), ("q2", ["北京大学"]), ("q3", ["上海"]), ("q4", ["广州"])])
    predictions = {"q1": "北京", "q2": "北大", "q3": "", "extra": "not in the gold"}
    scores = evaluate_cmrc(gold, predictions)
    # q1: EM 1, F1 1; q2: EM 0, F1 1/3 (see above); q3: empty, 0 and 0; q4: missing, 0 and SKIP.
    # F1 = 100·(1 + 1/3)/4 = 33.333..., EM = 100·1/4 = 25, AVERAGE = (33.333 + 25)/2 = 29.1666...
    assert scores["TOTAL"] == 4 and scores["SKIP"] == 1
    assert scores["F1"] == pytest.approx(100 * (4 / 3) / 4)
    assert scores["EM"] == pytest.approx(25.0)
    assert scores["AVERAGE"] == pytest.approx((100 / 3 + 25) / 2)
    assert format_cmrc_scores(scores, "p.json") == {
        "AVERAGE": "29.167", "F1": "33.333", "EM": "25.000", "TOTAL": 4, "SKIP": 1, "FILE": "p.json"}


def test_integer_gold_ids_match_predictions_keyed_by_their_strings():
    # the MRC readers accept integer ids too, and prediction files (JSON objects) key them as strings
    gold = {"data": [{"paragraphs": [{"qas": [{"id": 7, "answers": [{"text": "北京"}]},
                                              {"id": "8", "answers": [{"text": "上海"}]}]}]}]}
    scores = evaluate_cmrc(gold, {"7": "北京", "8": "广州"})
    assert (scores["TOTAL"], scores["SKIP"], scores["EM"]) == (2, 0, 50.0)
    # and restricting a gold file to a split's (string) ids keeps integer-id questions
    from cnbert.tasks.mrc import restrict_gold

    kept = restrict_gold(gold, {"7"})["data"][0]["paragraphs"][0]["qas"]
    assert [qa["id"] for qa in kept] == [7]


def test_gold_ids_are_stripped_before_the_lookup_as_in_the_official_scorer():
    # the official: query_id = qas['id'].strip(); prediction keys are used as they are
    gold = _gold([(" Q1 ", ["北京"]), ("Q2", ["上海"])])
    scores = evaluate_cmrc(gold, {"Q1": "北京", " Q2": "上海"})
    assert (scores["TOTAL"], scores["SKIP"], scores["EM"]) == (2, 1, 50.0)


@pytest.mark.parametrize("gold, problem", [
    ([], 'expected a JSON object with a "data" list'),
    ({"data": [{"title": "no paragraphs"}]}, 'data[0]: missing "paragraphs" list'),
    ({"data": [{"paragraphs": [{"context": ""}]}]}, 'data[0].paragraphs[0]: missing "qas" list'),
    ({"data": [{"paragraphs": [{"qas": [{"question": "?"}]}]}]},
     'data[0].paragraphs[0].qas[0]: missing "id" (a string or an integer)'),
    ({"data": [{"paragraphs": [{"qas": [{"id": True, "answers": [{"text": "a"}]}]}]}]},
     'data[0].paragraphs[0].qas[0]: missing "id" (a string or an integer)'),
    ({"data": [{"paragraphs": [{"qas": [{"id": "q9"}]}]}]}, "question 'q9': missing \"answers\" list"),
    ({"data": [{"paragraphs": [{"qas": [{"id": "q9", "answers": [{"answer_start": 3}]}]}]}]},
     "question 'q9': answers[0] has no string \"text\""),
    (_gold([("q9", [])]), "question 'q9': has no gold answers"),
    (_gold([("q9", ["a"]), ("q9", ["b"])]), "question 'q9': id appears twice"),
    (_gold([]), "the gold file has no questions"),
])
def test_bad_gold_data_names_the_file_and_the_question(gold, problem):
    with pytest.raises(DataError, match="^gold.json: ") as info:
        evaluate_cmrc(gold, {}, source="gold.json")
    assert problem in str(info.value)


def _reference_longest_common_run(a, b):
    # Independent dynamic programme over suffix lengths.
    best = 0
    run = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            if a[i] == b[j]:
                run[i + 1][j + 1] = run[i][j] + 1
                best = max(best, run[i + 1][j + 1])
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abc"), max_size=12), st.lists(st.sampled_from("abc"), max_size=12))
def test_longest_common_run_matches_a_direct_dynamic_programme(a, b):
    assert longest_common_run(a, b) == _reference_longest_common_run(a, b)


def _first_golds(gold):
    return {qa["id"]: qa["answers"][0]["text"]
            for item in gold["data"] for paragraph in item["paragraphs"] for qa in paragraph["qas"]}


@pytest.mark.data
@pytest.mark.parametrize("relative, total", [("cmrc2018/cmrc2018_dev.json", 3219),
                                             ("drcd/DRCD_dev.json", 3524)])
def test_real_dev_gold_scores_100_against_its_first_answers(relative, total):
    gold = json.loads(data_file(relative).read_text(encoding="utf-8"))
    start = time.perf_counter()
    scores = evaluate_cmrc(gold, _first_golds(gold))
    assert time.perf_counter() - start < 30
    assert scores == {"AVERAGE": 100.0, "F1": 100.0, "EM": 100.0, "TOTAL": total, "SKIP": 0}


def _is_chinese_only(text):
    return len(text) >= 2 and all("\u4e00" <= char <= "\u9fa5" for char in text)


@pytest.mark.data
def test_real_dev_gold_with_last_character_dropped_matches_closed_form():
    """Questions whose golds are all the same purely Chinese string of length L get the gold
    minus its last character: segments are characters, so lcs = L - 1, P = 1, R = (L-1)/L and
    F1 = 2(L-1)/(2L-1), EM 0. All other questions are left out and count as SKIP."""
    gold = json.loads(data_file("cmrc2018/cmrc2018_dev.json").read_text(encoding="utf-8"))
    predictions = {}
    expected_f1_sum = 0.0
    for item in gold["data"]:
        for paragraph in item["paragraphs"]:
            for qa in paragraph["qas"]:
                texts = {answer["text"] for answer in qa["answers"]}
                answer = texts.pop()
                if not texts and _is_chinese_only(answer):
                    predictions[qa["id"]] = answer[:-1]
                    length = len(answer)
                    expected_f1_sum += 2 * (length - 1) / (2 * length - 1)
    scores = evaluate_cmrc(gold, predictions)
    # Sanity of the selection itself (measured on the file: 1289 such questions).
    assert len(predictions) == 1289
    assert scores["TOTAL"] == 3219 and scores["SKIP"] == 3219 - len(predictions)
    assert scores["EM"] == 0.0
    assert scores["F1"] == pytest.approx(100 * expected_f1_sum / 3219, rel=1e-12)
