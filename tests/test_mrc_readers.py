"""Readers of CMRC 2018 / DRCD (SQuAD layout) and CJRC (CAIL2019 layout): typed examples, offset
repair with its report, and DataError on bad input."""
import collections
import json

import pytest

from cnbert.data import AnswerKind, MrcExample, locate_answer_start, read_cjrc, read_cmrc2018, read_drcd
from cnbert.errors import DataError
from cnbert.tasks.mrc import TASKS
from conftest import FIXTURES, data_file

CMRC_SAMPLE = FIXTURES / "mrc_cmrc2018_sample.json"


def squad_file(tmp_path, paragraphs, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"version": "v1.0", "data": [{"title": "t", "paragraphs": paragraphs}]},
                               ensure_ascii=False), encoding="utf-8")
    return path


def paragraph(context="北京是中国的首都。", qas=None):
    return {"context": context, "qas": qas if qas is not None else [question()]}


def question(qid="Q1", text="中国的首都是哪里？", answers=None):
    return {"id": qid, "question": text,
            "answers": answers if answers is not None else [{"text": "北京", "answer_start": 0}]}


# ---------------------------------------------------------------------------------------------
# Offsets and repair

def test_locate_answer_start_prefers_the_given_offset_then_the_nearest_one():
    context = "甲乙丙甲乙丙丁戊己庚辛甲乙"
    assert locate_answer_start(context, "甲乙", 3) == 3
    assert locate_answer_start(context, "甲乙", 4) == 3  # 1 early beats 2 late (6 is not 甲乙)
    assert locate_answer_start(context, "甲乙", 1) == 0  # 1 early beats 2 late
    assert locate_answer_start(context, "甲乙", 8) == 11  # 3 later, nothing closer
    assert locate_answer_start(context, "丙丁", 10) == 5  # exactly 5 away: still found
    assert locate_answer_start(context, "丙丁", 11) is None  # 6 away
    assert locate_answer_start(context, "子丑", 0) is None
    assert locate_answer_start("丙甲丙", "丙", 1) == 0  # equally near on both sides: the earlier one


def test_reads_the_cmrc_fixture_and_repairs_two_offsets():
    examples, report = read_cmrc2018(CMRC_SAMPLE)
    assert len(examples) == report.questions == report.span_answers == 23
    assert all(isinstance(e, MrcExample) for e in examples)
    repairs = {(r.qas_id, r.given_start, r.repaired_start) for r in report.repaired}
    assert repairs == {("TRAIN_876_QUERY_0", 342, 341), ("TRAIN_876_QUERY_2", 276, 275)}
    assert report.inconsistent == () and report.without_offset == 0
    for example in examples:
        answer = example.training_answer
        assert example.context_text[answer.answer_start:answer.answer_end] == answer.text
        assert example.model_context is example.context_text and example.model_question == example.question_text
        assert example.answer_kind == AnswerKind.SPAN
    first = examples[0]
    assert (first.qas_id, first.title, first.question_text) == ("TRAIN_186_QUERY_0", "范廷颂", "范廷颂是什么时候被任为主教的？")
    assert (first.training_answer.text, first.training_answer.answer_start) == ("1963年", 30)


def test_repairs_are_logged(caplog):
    with caplog.at_level("INFO", logger="cnbert.data.mrc_examples"):
        read_cmrc2018(CMRC_SAMPLE)
    assert "2 answer_start repaired" in caplog.text


def test_text_not_near_its_offset_is_reported_not_raised(tmp_path, caplog):
    path = squad_file(tmp_path, [paragraph("北京是中国的首都，上海是中国最大的城市。", [
        question("Q1", answers=[{"text": "上海", "answer_start": 0}]),
        question("Q2", answers=[{"text": "北京", "answer_start": 1}, {"text": "首都", "answer_start": -1}]),
    ])])
    examples, report = read_cmrc2018(path)
    assert [(a.qas_id, a.answer_index, a.given_start, a.text) for a in report.inconsistent] == [("Q1", 0, 0, "上海")]
    assert examples[0].training_answer.answer_start is None
    assert [(r.qas_id, r.given_start, r.repaired_start) for r in report.repaired] == [("Q2", 1, 0)]
    assert report.without_offset == 1 and examples[1].answers[1].answer_start is None
    assert "Q1#0" in caplog.text


def test_an_offset_past_the_end_of_its_passage_is_repaired(tmp_path):
    # An answer that ends its passage, recorded 1-2 characters late as in CMRC 2018 train, can
    # have an answer_start at or past the passage's end; it is repaired like any other.
    path = squad_file(tmp_path, [paragraph("北京是中国的首都", [
        question("Q1", answers=[{"text": "首都", "answer_start": 8}]),
        question("Q2", answers=[{"text": "首都", "answer_start": 7}]),
        question("Q3", answers=[{"text": "上海", "answer_start": 9}]),
    ])])
    examples, report = read_cmrc2018(path)
    assert [(r.qas_id, r.given_start, r.repaired_start) for r in report.repaired] == [("Q1", 8, 6), ("Q2", 7, 6)]
    assert [example.training_answer.answer_start for example in examples[:2]] == [6, 6]
    assert [(a.qas_id, a.given_start) for a in report.inconsistent] == [("Q3", 9)]


def test_empty_question_is_kept_and_reported(tmp_path):
    path = squad_file(tmp_path, [paragraph(qas=[question(text="")])])
    examples, report = read_cmrc2018(path)
    assert report.empty_questions == ("Q1",) and examples[0].question_text == ""


# ---------------------------------------------------------------------------------------------
# Bad input

@pytest.mark.parametrize("paragraphs, where, problem", [
    ([paragraph(context="")], "data[0].paragraphs[0]", "field 'context' is empty"),
    ([paragraph(context="  \n")], "data[0].paragraphs[0]", "field 'context' is empty"),
    ([{"qas": []}], "data[0].paragraphs[0]", "missing field 'context'"),
    ([{"context": "北京"}], "data[0].paragraphs[0]", "missing field 'qas'"),
    ([paragraph(qas=[{"question": "q", "answers": []}])], "data[0].paragraphs[0].qas[0]", "missing field 'id'"),
    ([paragraph(qas=[{"id": "Q7", "answers": []}])], "question Q7", "missing field 'question'"),
    ([paragraph(qas=[{"id": "Q7", "question": "q"}])], "question Q7", "missing field 'answers'"),
    ([paragraph(qas=[question("Q7", answers=[])])], "question Q7", "no answers"),
    ([paragraph(qas=[question("Q7", answers=[{"text": "北京"}])])], "question Q7 answers[0]",
     "missing field 'answer_start'"),
    ([paragraph(qas=[question("Q7", answers=[{"answer_start": 0}])])], "question Q7 answers[0]",
     "missing field 'text'"),
    ([paragraph(qas=[question("Q7", answers=[{"text": "北京", "answer_start": "0"}])])], "question Q7 answers[0]",
     "'answer_start' must be an integer, got a string"),
    ([paragraph(qas=[question("Q7", answers=[{"text": "北京", "answer_start": True}])])], "question Q7 answers[0]",
     "'answer_start' must be an integer, got a boolean"),
    # Up to MAX_OFFSET_REPAIR (5) characters past the end can still be repaired; farther cannot.
    ([paragraph(qas=[question("Q7", answers=[{"text": "北京", "answer_start": 14}])])], "question Q7 answers[0]",
     r"answer_start 14 is outside the context \(9 characters\)"),
    ([paragraph(qas=[question("Q7", answers=[{"text": "北京", "answer_start": -2}])])], "question Q7 answers[0]",
     "answer_start -2 is outside the context"),
    ([paragraph(qas=[question("Q7", answers=[{"text": " ", "answer_start": 0}])])], "question Q7 answers[0]",
     "field 'text' is empty"),
    ([paragraph(qas=[question("Q7"), question("Q7")])], "question Q7", "question id seen twice"),
    ([paragraph(qas=[question("Q7")]), paragraph(qas=[question("Q7")])], "question Q7", "question id seen twice"),
    ([paragraph(qas=["Q7"])], "data[0].paragraphs[0].qas[0]", "expected a JSON object, got a string"),
    ([paragraph(qas=[question("Q7 ")])], "question 'Q7 '", "id has surrounding whitespace"),
])
def test_bad_squad_input_raises_data_error_naming_file_and_record(tmp_path, paragraphs, where, problem):
    path = squad_file(tmp_path, paragraphs)
    with pytest.raises(DataError, match=problem) as error:
        read_cmrc2018(path)
    assert error.value.path == str(path)
    assert str(error.value).startswith(f"{path}: ")
    assert error.value.where == where


def test_a_paragraph_id_is_named_too(tmp_path):
    path = squad_file(tmp_path, [{"id": "TRAIN_9", "context": "", "qas": []}])
    with pytest.raises(DataError, match="field 'context' is empty") as error:
        read_cmrc2018(path)
    assert error.value.where == "data[0].paragraphs[0] (id TRAIN_9)"


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"paragraphs": [}\n]}', encoding="utf-8")
    with pytest.raises(DataError, match="malformed JSON") as error:
        read_cmrc2018(path)
    assert error.value.where == "line 2 column 19"


def test_missing_file_and_wrong_top_level(tmp_path):
    with pytest.raises(DataError, match="cannot read the file"):
        read_cmrc2018(tmp_path / "absent.json")
    path = tmp_path / "list.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object, got a list"):
        read_cmrc2018(path)
    path.write_text('{"version": "1"}', encoding="utf-8")
    with pytest.raises(DataError, match="missing field 'data'"):
        read_cmrc2018(path)


# ---------------------------------------------------------------------------------------------
# CJRC layout (a made-up document in the CAIL2019 layout: the real data may not be copied)

CJRC_CONTEXT = "经审理查明：原告王某与被告李某于2015年签订借款合同，约定借款5万元。被告至今未归还借款。"


def cjrc_file(tmp_path, qas, domain="civil", extra=None):
    item = {"caseid": "1", "domain": domain,
            "paragraphs": [{"context": CJRC_CONTEXT, "casename": "借款纠纷", "qas": qas}], **(extra or {})}
    if domain is None:
        del item["domain"]
    path = tmp_path / "cjrc.json"
    path.write_text(json.dumps({"version": "1.0", "data": [item]}, ensure_ascii=False), encoding="utf-8")
    return path


def cjrc_question(qid, answers, impossible="false"):
    return {"id": qid, "question": "问题？", "is_impossible": impossible,
            "answers": [{"text": text, "answer_start": start} for text, start in answers]}


def test_cjrc_answer_kinds_domain_and_flags(tmp_path):
    start = CJRC_CONTEXT.index("5万元")
    path = cjrc_file(tmp_path, [
        cjrc_question("1_1", [("5万元", start), ("借款5万元", start - 2), ("5万元", start)]),
        cjrc_question("1_2", [("YES", -1), ("YES", -1), ("NO", -1)]),
        cjrc_question("1_3", [("NO", -1)]),
        cjrc_question("1_4", [("", -1), ("", -1)], impossible="true"),
        cjrc_question("1_5", [("5万元", start), ("", -1)], impossible="true"),
        cjrc_question("1_6", [], impossible="true"),
    ])
    examples, report = read_cjrc(path)
    kinds = {e.qas_id: (e.answer_kind, e.is_impossible) for e in examples}
    assert kinds == {"1_1": (AnswerKind.SPAN, False), "1_2": (AnswerKind.YES, False), "1_3": (AnswerKind.NO, False),
                     "1_4": (AnswerKind.UNKNOWN, True), "1_5": (AnswerKind.SPAN, True),
                     "1_6": (AnswerKind.UNKNOWN, True)}
    assert all(e.domain == "civil" and e.title == "借款纠纷" for e in examples)
    assert examples[0].gold_texts == ["5万元", "借款5万元", "5万元"]
    assert [a.kind for a in examples[1].answers] == [AnswerKind.YES, AnswerKind.YES, AnswerKind.NO]
    assert all(a.answer_start is None for a in examples[1].answers + examples[3].answers)
    assert report.span_answers == 4 and report.repaired == () and report.without_offset == 0


@pytest.mark.parametrize("qas, domain, problem", [
    ([cjrc_question("1_1", [("YES", -1)])], None, "missing field 'domain'"),
    ([{"id": "1_1", "question": "q", "answers": []}], "civil", "missing field 'is_impossible'"),
    ([cjrc_question("1_1", [("YES", -1)], impossible="maybe")], "civil", "is_impossible must be 'true' or 'false'"),
    ([cjrc_question("1_1", [("", 3)])], "civil", "empty answer text with an answer_start"),
    ([cjrc_question("1_1", []), cjrc_question("1_1", [])], "civil", "question id seen twice"),
    # The scorer reports by domain: a misspelt one would otherwise fail the first evaluation, after training.
    ([cjrc_question("1_1", [("YES", -1)])], "Civil", "domain 'Civil' is not one of civil, criminal"),
])
def test_bad_cjrc_input(tmp_path, qas, domain, problem):
    with pytest.raises(DataError, match=problem):
        read_cjrc(cjrc_file(tmp_path, qas, domain))


def test_a_span_question_without_answers_is_an_error_only_in_squad_files(tmp_path):
    examples, _ = read_cjrc(cjrc_file(tmp_path, [cjrc_question("1_1", [])]))
    assert examples[0].answers == () and examples[0].answer_kind == AnswerKind.UNKNOWN


# ---------------------------------------------------------------------------------------------
# The real files: exact counts measured on them

@pytest.mark.data
@pytest.mark.parametrize("relative, questions, answers, repaired, shifts, without_offset, empty", [
    # train: 20 answers start 1 character late and 1 answer 2 late; all repaired.
    ("cmrc2018/cmrc2018_train.json", 10142, 10142, 21, {-1: 20, -2: 1}, 0, 0),
    ("cmrc2018/cmrc2018_trial.json", 1002, 1002, 5, {-1: 5}, 0, 2),
    # dev: of the 200 answers whose answer_start is wrong, 7 are a character or two off (repaired)
    # and 193 are extra references given answer_start -1 (dev is scored on text).
    ("cmrc2018/cmrc2018_dev.json", 3219, 9657, 7, {-1: 3, -2: 4}, 193, 0),
])
def test_cmrc2018_offset_repairs(relative, questions, answers, repaired, shifts, without_offset, empty):
    examples, report = read_cmrc2018(data_file(relative))
    assert (report.questions, report.span_answers, len(report.repaired)) == (questions, answers, repaired)
    assert collections.Counter(r.repaired_start - r.given_start for r in report.repaired) == shifts
    assert report.inconsistent == ()
    assert report.without_offset == without_offset and len(report.empty_questions) == empty
    for example in examples:
        for answer in example.answers:
            if answer.answer_start is not None:
                assert example.context_text[answer.answer_start:answer.answer_end] == answer.text
    assert all(e.training_answer.answer_start is not None for e in examples)


@pytest.mark.data
def test_drcd_dev_offsets_are_all_right():
    examples, report = read_drcd(data_file("drcd/DRCD_dev.json"))
    assert (report.questions, report.span_answers) == (3524, 7048)
    assert (report.repaired, report.inconsistent, report.without_offset) == ((), (), 0)


@pytest.mark.data
def test_one_question_is_read_as_a_files_question_is():
    """Predict mode's --question / --context: a DRCD model reads them in simplified Chinese, as it
    reads a file's questions; answers are sliced from the passage as given."""
    first = read_drcd(data_file("drcd/DRCD_dev.json")).examples[0]
    one = TASKS["drcd"].question_example(first.question_text, first.context_text)
    assert (one.model_question, one.model_context) == (first.model_question, first.model_context)
    assert one.model_context != one.context_text == first.context_text  # 歐洲 -> 欧洲
    assert one.answers == () and one.qas_id == "question"
    plain = TASKS["cmrc2018"].question_example(first.question_text, first.context_text)
    assert (plain.model_question, plain.model_context) == (first.question_text, first.context_text)


@pytest.mark.data
def test_cjrc_dev_layout_counts():
    examples, report = read_cjrc(data_file("cjrc/dev_ground_truth.json"))
    assert report.questions == 6000 and all(len(e.answers) == 3 for e in examples)
    assert report.span_answers == 12249 and report.repaired == () and report.inconsistent == ()
    assert collections.Counter(e.domain for e in examples) == {"civil": 3000, "criminal": 3000}
    # The file's is_impossible flag (1420 true) and its first reference disagree on 176 questions:
    # is_impossible = "true" while the first reference is a span (122), YES (39) or NO (15). The
    # training class follows the first reference, as the scorer scores the references' texts.
    assert sum(e.is_impossible for e in examples) == 1420
    by_flag = collections.Counter((e.is_impossible, e.answer_kind) for e in examples)
    assert by_flag == {(False, AnswerKind.SPAN): 3977, (False, AnswerKind.YES): 410, (False, AnswerKind.NO): 193,
                       (True, AnswerKind.UNKNOWN): 1244, (True, AnswerKind.SPAN): 122, (True, AnswerKind.YES): 39,
                       (True, AnswerKind.NO): 15}


def test_questions_to_answer_need_no_answers(tmp_path):
    # Prediction files (an unreleased test set) carry questions only; answers, when present, are read.
    path = squad_file(tmp_path, [paragraph(qas=[{"id": "Q1", "question": "首都？"},
                                                {"id": "Q2", "question": "哪里？", "answers": []},
                                                question("Q3")])])
    with pytest.raises(DataError, match="missing field 'answers'"):
        read_cmrc2018(path)
    examples, _ = read_cmrc2018(path, labelled=False)
    assert [(e.qas_id, e.gold_texts) for e in examples] == [("Q1", []), ("Q2", []), ("Q3", ["北京"])]
    assert [e.qas_id for e in read_drcd(path, labelled=False).examples] == ["Q1", "Q2", "Q3"]
    cjrc = cjrc_file(tmp_path, [{"id": "1_1", "question": "借款多少？"}], domain="unheard-of")
    (example,) = read_cjrc(cjrc, labelled=False).examples
    assert (example.qas_id, example.is_impossible, example.answers) == ("1_1", False, ())
