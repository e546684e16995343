"""`cnbert-score` end to end (subprocess), and the predictions / gold file readers' errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnbert.errors import DataError
from cnbert.eval.predictions import load_predictions
from cnbert.io_utils import read_json_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CMRC_GOLD = FIXTURES / "score_cmrc_sample_gold.json"
CMRC_PREDICTIONS = FIXTURES / "score_cmrc_sample_predictions.json"
DRCD_GOLD = FIXTURES / "score_drcd_sample_gold.json"


def score(*args):
    return subprocess.run([sys.executable, "-m", "cnbert.runners.score", *args], capture_output=True,
                          text=True, encoding="utf-8", timeout=120)


def write_json(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def test_cmrc_sample_prints_the_official_record():
    result = score("--task=cmrc2018", f"--data_file={CMRC_GOLD}", f"--predictions_file={CMRC_PREDICTIONS}")
    assert result.returncode == 0, result.stderr
    # Per question (EM, F1), segs = segments after punctuation removal:
    #   DEV_0_QUERY_0  光荣和ω-force = gold                                          (1, 1)
    #   DEV_0_QUERY_1  谜之村雨城 vs 村雨城: lcs 3, P 3/5, R 1 -> 0.75
    #                  vs 任天堂游戏谜之村雨城: lcs 5, P 1, R 1/2 -> 2/3; best      (0, 0.75)
    #   DEV_0_QUERY_2  「战史演武」 -> [战 史 演 武]; gold 「战史演武」&「争霸演武」
    #                  -> [战 史 演 武 & 争 霸 演 武] (9): P 1, R 4/9 -> 8/13       (0, 8/13)
    #   DEV_214_QUERY_0 科阿韦拉州 vs 发现地科阿韦拉州: P 1, R 5/8 -> 10/13          (0, 10/13)
    #   DEV_214_QUERY_1 = third gold                                                 (1, 1)
    #   DEV_214_QUERY_2 [terry a. gates] vs [terry a. gates 与 其 同 事]: R 3/7 -> 0.6  (0, 0.6)
    #   DEV_1113_QUERY_0 [comic gum2006 年 1 月 号] vs the 12 segments of
    #                  "Comic Gum2006年1月号到2013年12月号": P 1, R 1/2 -> 2/3      (0, 2/3)
    #   DEV_1113_QUERY_1 "wani books" = "WANI BOOKS" after lower-casing              (1, 1)
    #   DEV_1113_QUERY_2 missing: SKIP                                               (0, 0)
    # EM = 100·3/9 = 33.333; F1 = 100·(3 + 0.75 + 18/13 + 0.6 + 2/3)/9 = 71.125;
    # AVERAGE = (33.333 + 71.125)/2 = 52.229
    assert result.stdout.strip() == json.dumps({
        "AVERAGE": "52.229", "F1": "71.125", "EM": "33.333", "TOTAL": 9, "SKIP": 1,
        "FILE": str(CMRC_PREDICTIONS)})
    assert "1 gold questions have no prediction (scored 0): DEV_1113_QUERY_2" in result.stderr


def test_drcd_is_scored_on_traditional_text_with_the_cmrc_scorer(tmp_path):
    predictions = write_json(tmp_path / "drcd_predictions.json", {
        "5534-1-1": "比較列傳",        # 《》 are in SP_CHAR: EM 1, F1 1
        "5534-1-2": "文藝復興時期的",  # vs 文藝復興時期: P 6/7, R 1 -> 12/13; vs 文藝復興: 8/11
        "5534-1-3": "希臘中部",        # nothing in common with 喀羅尼亞: 0
        "not-a-drcd-id": "ignored",
    })
    result = score("--task=drcd", f"--data_file={DRCD_GOLD}", f"--predictions_file={predictions}")
    assert result.returncode == 0, result.stderr
    # EM = 100/3 = 33.333, F1 = 100·(1 + 12/13)/3 = 64.103, AVERAGE = 48.718
    report = json.loads(result.stdout)
    assert (report["AVERAGE"], report["F1"], report["EM"], report["TOTAL"], report["SKIP"]) == (
        "48.718", "64.103", "33.333", 3, 0)
    assert "1 predictions match no gold question (ignored): not-a-drcd-id" in result.stderr


def test_unmatched_id_warnings_look_ids_up_as_the_scorer_does(tmp_path):
    # The CMRC 2018 scorer looks a gold id up stripped of spaces: " Q1" finds the prediction "Q1"
    # and is scored; "Q2 " looks up "Q2", which is missing, so the prediction "Q2 " is unused.
    gold = write_json(tmp_path / "gold.json", {"data": [{"paragraphs": [{"context": "北京是首都", "qas": [
        {"id": " Q1", "question": "首都是哪里？", "answers": [{"text": "北京", "answer_start": 0}]},
        {"id": "Q2 ", "question": "北京是什么？", "answers": [{"text": "首都", "answer_start": 3}]}]}]}]})
    predictions = write_json(tmp_path / "predictions.json", {"Q1": "北京", "Q2 ": "首都"})
    result = score("--task=cmrc2018", f"--data_file={gold}", f"--predictions_file={predictions}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["EM"], report["TOTAL"], report["SKIP"]) == ("50.000", 2, 1)
    warnings = result.stderr.strip().splitlines()
    assert warnings == ["cnbert-score: warning: 1 gold questions have no prediction (scored 0): 'Q2 '",
                        "cnbert-score: warning: 1 predictions match no gold question (ignored): 'Q2 '"]


# A made-up two-case CJRC file (the real one states no licence, so nothing of it is copied here).
CJRC_GOLD = {"version": "1.0", "data": [
    {"caseid": "1", "domain": "civil", "paragraphs": [{"context": "原告与被告于2010年登记结婚。", "qas": [
        {"id": "1_1", "question": "何时结婚？", "is_impossible": "false",
         "answers": [{"text": "2010年", "answer_start": 6}, {"text": "2010年", "answer_start": 6},
                     {"text": "于2010年", "answer_start": 5}]},
        {"id": "1_2", "question": "是否登记？", "is_impossible": "false",
         "answers": [{"text": "YES", "answer_start": -1}] * 3},
    ]}]},
    {"caseid": "2", "domain": "criminal", "paragraphs": [{"context": "被告人盗窃现金500元。", "qas": [
        {"id": "2_1", "question": "盗窃多少现金？", "is_impossible": "false",
         "answers": [{"text": "500元", "answer_start": 7}] * 3},
        {"id": "2_2", "question": "是否赔偿？", "is_impossible": "true",
         "answers": [{"text": "", "answer_start": -1}] * 3},
    ]}]},
]}


@pytest.mark.parametrize("as_list", [True, False], ids=["official-list", "mapping"])
def test_cjrc_scores_per_domain(tmp_path, as_list):
    gold = write_json(tmp_path / "cjrc_gold.json", CJRC_GOLD)
    answers = {"1_1": "2010年", "1_2": "NO", "2_1": "现金500元", "2_2": ""}
    predictions = write_json(tmp_path / "cjrc_predictions.json",
                             [{"id": k, "answer": v} for k, v in answers.items()] if as_list else answers)
    result = score("--task=cjrc", f"--data_file={gold}", f"--predictions_file={predictions}")
    assert result.returncode == 0, result.stderr
    # 1_1: sets {2010年, 于2010年} twice -> EM 1, F1 1; {2010年, 2010年} -> 1: (1, 1).
    # 1_2: NO vs YES ×3: (0, 0).  civil: EM 50.0, F1 50.0
    # 2_1: 现金500元 vs 500元: P 4/6, R 1 -> F1 0.8, EM 0.  2_2: "" vs "": (1, 1).
    # criminal: EM 50.0, F1 90.0.  overall: EM 100·2/4 = 50.0, F1 100·2.8/4 = 70.0
    assert json.loads(result.stdout) == {
        "civil": {"em": 50.0, "f1": 50.0, "qas": 2},
        "criminal": {"em": 50.0, "f1": 90.0, "qas": 2},
        "overall": {"em": 50.0, "f1": 70.0, "qas": 4},
    }


def test_console_script_is_installed_and_runs():
    script = Path(sys.executable).with_name("cnbert-score")
    if not script.exists():
        pytest.fail(f"{script} missing: reinstall with `pip install --no-build-isolation --no-deps -e .`")
    result = subprocess.run([str(script), "--task=cmrc2018", f"--data_file={CMRC_GOLD}",
                             f"--predictions_file={CMRC_PREDICTIONS}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["F1"] == "71.125"


def test_scoring_imports_neither_torch_nor_tensorflow():
    code = ("import sys, cnbert.runners.score; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unknown_task_is_a_flag_error():
    result = score("--task=squad", f"--data_file={CMRC_GOLD}", f"--predictions_file={CMRC_PREDICTIONS}")
    assert result.returncode == 2
    assert result.stderr.startswith("cnbert-score: error: flag --task=squad: value should be one of")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    ([f"--data_file={CMRC_GOLD}", f"--predictions_file={CMRC_PREDICTIONS}"], "--task"),
    (["--task=cmrc2018", "--data_file=/no/such/gold.json", f"--predictions_file={CMRC_PREDICTIONS}"],
     "--data_file must name an existing file"),
    (["--task=cmrc2018", f"--data_file={CMRC_GOLD}", f"--predictions_file={CMRC_PREDICTIONS}", "extra"],
     "unexpected arguments: extra"),
])
def test_bad_flags_are_reported_without_traceback(args, message):
    # as every cnbert command: status 2, one error line and the --help hint, not absl's usage dump
    result = score(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("cnbert-score: error: ") and message in result.stderr
    assert result.stderr.endswith("(cnbert-score --help lists the flags)\n"), result.stderr
    assert len(result.stderr.splitlines()) == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("task, gold_text, predictions_text, message", [
    ("cmrc2018", None, '{"DEV_0_QUERY_0": "光荣"', "predictions.json: line 1 column 23: malformed JSON"),
    ("cmrc2018", None, '[{"id": "DEV_0_QUERY_0", "answer": "光荣"}]',
     "predictions.json: expected a JSON object {id: answer}, got a JSON list"),
    ("cmrc2018", None, '{"DEV_0_QUERY_0": 3}', "predictions.json: id 'DEV_0_QUERY_0': answer must be a string"),
    ("cjrc", '{"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": []}]}]}]}', "{}",
     "gold.json: question 'q1': domain of its data item is None"),
    ("cmrc2018", '{"data": [{"paragraphs": [{"qas": [{"id": "q1"}]}]}]}', "{}",
     "gold.json: question 'q1': missing \"answers\" list"),
    ("drcd", "{not json", "{}", "gold.json: line 1 column 2: malformed JSON"),
])
def test_bad_input_exits_1_naming_file_and_entry(tmp_path, task, gold_text, predictions_text, message):
    gold = tmp_path / "gold.json"
    if gold_text is None:
        gold.write_bytes(CMRC_GOLD.read_bytes())
    else:
        gold.write_text(gold_text, encoding="utf-8")
    predictions = tmp_path / "predictions.json"
    predictions.write_text(predictions_text, encoding="utf-8")
    result = score(f"--task={task}", f"--data_file={gold}", f"--predictions_file={predictions}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert f"cnbert-score: error: {tmp_path}{os.sep}{message}" in result.stderr


@pytest.mark.parametrize("content, where, problem", [
    ('{"a": "x", "a": "y"}', "id 'a'", "appears twice"),
    ('"just a string"', None, "expected a JSON object {id: answer} or a list"),
    ('[["a", "x"]]', "entry 0", "expected {\"id\": ..., \"answer\": ...}, got list"),
    ('[{"id": "a"}]', "entry 0", "missing field 'answer'"),
    ('[{"answer": "x"}]', "entry 0", "missing field 'id'"),
    ('[{"id": 7.5, "answer": "x"}]', "entry 0", "id must be a string or an integer, got float"),
    ('[{"id": "a", "answer": null}]', "entry 0 (id 'a')", "answer must be a string, got NoneType"),
    ('[{"id": "a", "answer": "x"}, {"id": "a", "answer": "y"}]', "entry 1 (id 'a')", "id appears twice"),
])
def test_predictions_file_errors_name_the_entry(tmp_path, content, where, problem):
    path = tmp_path / "preds.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_predictions(path, allow_list=True)
    assert info.value.path == str(path) and info.value.where == where
    assert problem in info.value.problem


def test_predictions_accept_both_forms_and_empty_answers(tmp_path):
    mapping = write_json(tmp_path / "m.json", {"a": "北京", "b": ""})
    listed = write_json(tmp_path / "l.json", [{"id": "a", "answer": "北京"}, {"id": "b", "answer": ""}])
    assert load_predictions(mapping) == load_predictions(listed, allow_list=True) == {"a": "北京", "b": ""}


def test_unreadable_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read the file"):
        read_json_file(tmp_path / "missing.json")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"a": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"line 1 \(byte 10\): not UTF-8 text"):
        read_json_file(latin)
