"""Classification and matching data (ChnSentiCorp, LCQMC, XNLI, THUCNews): the readers on the real
files against an independent parse (Python's csv module), bad records named by file and line, the
[CLS] a [SEP] b [SEP] features against transformers' pair encoding, and the accuracy score."""
import csv
import re
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import data_file
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from cnbert.data.classification import (
    ClassificationExample,
    TsvFormat,
    build_classification_features,
    read_classification_tsv,
    truncate_pair,
)
from cnbert.errors import DataError
from cnbert.tasks import classification as tasks
from cnbert.tokenization import ChineseBertTokenizer, bundled_vocab_path

REAL_FILES = [  # task, file, examples in it
    ("chnsenticorp", "chnsenticorp/train.tsv", 9600),
    ("chnsenticorp", "chnsenticorp/dev.tsv", 1200),
    ("chnsenticorp", "chnsenticorp/test.tsv", 1200),
    ("lcqmc", "lcqmc/lcqmc_dev.tsv", 8802),
    ("lcqmc", "lcqmc/lcqmc_test.tsv", 12500),
    ("xnli", "xnli_zh/dev.tsv", 2490),
    ("xnli", "xnli_zh/test.tsv", 5010),
    ("thucnews", "thucnews/cnews.subset1000.txt", 1000),
    ("thucnews_titles", "thucnews/titles/dev.txt", 10000),
    ("thucnews_titles", "thucnews/titles/test.txt", 10000),
    ("dbqa", "dbqa/nlpcc2017.dbqa.test", 14566),
]


def csv_rows(path, columns=None):
    """The file's records as dicts, read by the csv module with tabs and no quoting; `columns` name
    the fields of a file without a header."""
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, fieldnames=columns, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.mark.parametrize("task_name, relative, count", REAL_FILES)
def test_real_files_read_as_an_independent_parse_does(task_name, relative, count):
    task = tasks.get_task(task_name)
    path = data_file(relative)
    examples = task.read(path)
    rows = csv_rows(path, None if task.format.header else list(task.format.columns))
    assert len(examples) == len(rows) == count
    for example, row in zip(examples, rows):
        assert (example.text_a, example.text_b, example.label) == (row["text_a"], row.get("text_b"), row["label"])
    first_line = 2 if task.format.header else 1
    assert examples[0].guid == f"{path.name}:{first_line}"
    assert examples[-1].guid == f"{path.name}:{first_line + count - 1}"


def test_real_label_counts():
    # counts read off the files with `cut -f | sort | uniq -c`
    assert Counter(e.label for e in tasks.get_task("xnli").read(data_file("xnli_zh/dev.tsv"))) == {
        "contradiction": 830, "entailment": 830, "neutral": 830}
    assert Counter(e.label for e in tasks.get_task("chnsenticorp").read(data_file("chnsenticorp/train.tsv"))) == {
        "0": 4801, "1": 4799}
    news = Counter(e.label for e in tasks.get_task("thucnews").read(data_file("thucnews/cnews.subset1000.txt")))
    assert news == {"体育": 116, "财经": 115, "房产": 104, "教育": 104, "游戏": 104, "时政": 94, "科技": 94,
                    "时尚": 91, "娱乐": 89, "家居": 89}
    titles = Counter(e.label for e in tasks.get_task("thucnews_titles").read(data_file("thucnews/titles/dev.txt")))
    assert titles == {str(i): 1000 for i in range(10)}
    # the cnews articles' label column is not a headline's: read as headlines, the file is refused
    with pytest.raises(DataError, match=r"cnews.subset1000.txt: line 1: label .* is not one of this task's labels"):
        tasks.get_task("thucnews_titles").read(data_file("thucnews/cnews.subset1000.txt"))


def test_lcqmc_train_reads_whole():
    examples = tasks.get_task("lcqmc").read(data_file("lcqmc/lcqmc_train.tsv"))
    assert len(examples) == 238766
    assert {e.label for e in examples} == {"0", "1"}


PAIR = TsvFormat(text_a="text_a", text_b="text_b", label="label")


def write(tmp_path, text, name="data.tsv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("text, where, problem", [
    ("text_a\ttext_b\tlabel\n好\t坏\t1\n好\t坏\t2\n", "line 3", "label '2' is not one of"),
    ("text_a\ttext_b\tlabel\n好\t坏\t1\n好\t坏\n", "line 3", "2 tab-separated fields, expected 3"),
    ("text_a\ttext_b\tlabel\n好\t坏\t1\n好\t坏\t1\t多\n", "line 3", "4 tab-separated fields"),
    ("text_a\tlabel\n好\t1\n", "line 1", "lacks the column(s) ['text_b']"),
    ("text_a\ttext_b\n好\t坏\n", "line 1", "the label column is needed"),
    ("text_a\ttext_b\tlabel\n好\t \t1\n", "line 2", "text_b is empty"),
    ("text_a\ttext_a\ttext_b\tlabel\n好\t好\t坏\t1\n", "line 1", "names ['text_a'] more than once"),
    ("text_a\ttext_b\tlabel\n", None, "no examples"),
    ("", None, "empty file"),
])
def test_bad_records_are_named_by_file_and_line(tmp_path, text, where, problem):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=re.escape(problem)) as error:
        read_classification_tsv(path, PAIR, ("0", "1"))
    assert error.value.path == str(path) and error.value.where == where


def test_a_file_of_another_format_is_named_with_the_start_of_its_first_line(tmp_path):
    # a JSON file given as a TSV: its first "header" line can be megabytes long
    first_line = '{"data": [' + '"x", ' * 20000 + '"x"]}'
    path = write(tmp_path, first_line + "\n", "dev.json")
    with pytest.raises(DataError, match=re.escape(f"... ({len(first_line)} characters) lacks the column(s)")) as error:
        read_classification_tsv(path, PAIR, ("0", "1"))
    assert len(str(error.value)) < 500


def test_columns_by_header_name_crlf_and_other_line_separators(tmp_path):
    # columns in another order, Windows line ends, a U+2028 and a lone CR inside texts (neither is a
    # record break), quotes as text, a byte-order mark before the header
    path = write(tmp_path, '\ufefflabel\ttext_b\ttext_a\r\n1\t第二\u2028行\t"引号\r\n0\tb\ra\ta\r\n')
    examples = read_classification_tsv(path, PAIR, ("0", "1"))
    assert examples == [ClassificationExample("data.tsv:2", '"引号', "第二\u2028行", "1"),
                        ClassificationExample("data.tsv:3", "a", "b\ra", "0")]
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("label\ttext_a\ttext_b\n1\ta\tb\n0\tcaf\u00e9\tb\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.tsv: line 3 \(byte 31\): the data file is not UTF-8 text"):
        read_classification_tsv(latin, PAIR, ("0", "1"))


def test_unlabelled_files_may_lack_the_label_column_but_not_hold_bad_labels(tmp_path):
    examples = read_classification_tsv(write(tmp_path, "text_a\ttext_b\n好\t坏\n"), PAIR, ("0", "1"), labelled=False)
    assert examples == [ClassificationExample("data.tsv:2", "好", "坏", None)]
    with pytest.raises(DataError, match="line 2: label 'x'"):
        read_classification_tsv(write(tmp_path, "text_a\ttext_b\tlabel\n好\t坏\tx\n"), PAIR, ("0", "1"), labelled=False)


def test_headerless_format_reads_its_declared_columns(tmp_path):
    task = tasks.get_task("thucnews")
    path = write(tmp_path, "体育\t湖人赢了\ttext_a\n", "news.txt")
    with pytest.raises(DataError, match="line 1: 3 tab-separated fields, expected 2"):
        task.read(path)
    path = write(tmp_path, "体育\t湖人赢了\n财经\t股市\n", "news.txt")
    assert [(e.guid, e.label, e.text_a) for e in task.read(path)] == [("news.txt:1", "体育", "湖人赢了"),
                                                                      ("news.txt:2", "财经", "股市")]


def test_truncate_pair_drops_from_the_longer_and_from_b_on_a_tie():
    a, b = list(range(10)), list(range(100, 104))
    truncate_pair(a, b, 8)
    assert (a, b) == ([0, 1, 2, 3], [100, 101, 102, 103])
    a, b = list(range(5)), list(range(100, 105))
    truncate_pair(a, b, 7)
    assert (a, b) == ([0, 1, 2, 3], [100, 101, 102])
    a, b = [1, 2], []
    truncate_pair(a, b, 5)
    assert (a, b) == ([1, 2], [])


@pytest.fixture(scope="module")
def tokenizer():
    return ChineseBertTokenizer()


@pytest.fixture(scope="module")
def reference_tokenizer():
    """Google BERT's Python tokenizer, as transformers ships it."""
    return BertTokenizerLegacy(str(bundled_vocab_path()), do_lower_case=True)


@pytest.mark.parametrize("max_seq_length", [24, 64])
def test_pair_features_match_transformers_longest_first_encoding(tokenizer, reference_tokenizer, max_seq_length):
    """[CLS] a [SEP] b [SEP], token types 0 then 1, truncated longest-first: what transformers'
    BERT tokenizer gives for the same pair, on 400 real XNLI pairs (most truncated at 24)."""
    task = tasks.get_task("xnli")
    examples = task.read(data_file("xnli_zh/dev.tsv"))[:400]
    features = build_classification_features(examples, tokenizer, max_seq_length, task.labels)
    truncated = 0
    for i, example in enumerate(examples):
        want = reference_tokenizer(example.text_a, example.text_b, truncation="longest_first",
                                   max_length=max_seq_length, return_token_type_ids=True)
        n = len(want["input_ids"])
        assert features.input_ids[i, :n].tolist() == want["input_ids"], example.guid
        assert features.token_type_ids[i, :n].tolist() == want["token_type_ids"], example.guid
        assert features.attention_mask[i].sum() == n and not features.input_ids[i, n:].any()
        full = reference_tokenizer(example.text_a, example.text_b)["input_ids"]
        truncated += len(full) > max_seq_length
    assert features.num_truncated == truncated
    if max_seq_length == 24:
        assert truncated > 200
    assert features.input_ids.shape == (400, min(max_seq_length, features.attention_mask.sum(axis=1).max()))
    assert features.labels.tolist() == [task.labels.index(e.label) for e in examples]


def test_single_text_features_and_padding_to_the_longest_row(tokenizer, reference_tokenizer):
    task = tasks.get_task("chnsenticorp")
    examples = task.read(data_file("chnsenticorp/dev.tsv"))[:50]
    features = build_classification_features(examples, tokenizer, 128, task.labels)
    lengths = features.attention_mask.sum(axis=1)
    assert features.input_ids.shape == (50, lengths.max()) and lengths.max() == 128  # some reviews are longer
    for i, example in enumerate(examples):
        want = reference_tokenizer(example.text_a, truncation=True, max_length=128)["input_ids"]
        assert features.input_ids[i, :lengths[i]].tolist() == want
    assert not features.token_type_ids.any()
    arrays = features.model_arrays()
    assert set(arrays) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert all(a.dtype == np.int64 for a in arrays.values())


def test_feature_errors(tokenizer):
    labels = ("0", "1")
    with pytest.raises(ValueError, match="no label, but others"):
        build_classification_features([ClassificationExample("f:2", "好", None, "1"),
                                       ClassificationExample("f:3", "好", None, None)], tokenizer, 16, labels)
    with pytest.raises(ValueError, match="mix single texts and text pairs"):
        build_classification_features([ClassificationExample("f:2", "好", "坏", "1"),
                                       ClassificationExample("f:3", "好", None, "1")], tokenizer, 16, labels)
    with pytest.raises(ValueError, match="f:2: label '7'"):
        build_classification_features([ClassificationExample("f:2", "好", None, "7")], tokenizer, 16, labels)
    with pytest.raises(ValueError, match="leaves no room"):
        build_classification_features([ClassificationExample("f:2", "好", "坏", "1")], tokenizer, 4, labels)
    unlabelled = build_classification_features([ClassificationExample("f:2", "好", None, None)], tokenizer, 16, labels)
    assert unlabelled.labels is None and "labels" not in unlabelled.model_arrays()


def test_accuracy_and_per_label_counts():
    task = tasks.get_task("xnli")
    examples = [ClassificationExample(f"f:{i}", "a", "b", label) for i, label in
                enumerate(["entailment", "neutral", "neutral", "contradiction", "entailment"])]
    # predicted: entailment, contradiction, neutral, contradiction, neutral
    logits = np.array([[0, 2, 1], [3, 1, 2], [0, 0, 5], [1, 0, 0], [0, 1, 1.5]])
    scores = task_score = tasks.score(task, examples, logits)
    assert task_score["accuracy"] == pytest.approx(60.0) and scores["total"] == 5
    assert scores["per_label"] == {"contradiction": {"gold": 1, "predicted": 2, "correct": 1},
                                   "entailment": {"gold": 2, "predicted": 1, "correct": 1},
                                   "neutral": {"gold": 2, "predicted": 2, "correct": 1}}
    assert task.criterion(scores) == pytest.approx(60.0) and task.metric_names == ("accuracy",)
    with pytest.raises(ValueError, match=r"shape \(5, 2\), expected \(5, 3\)"):
        tasks.score(task, examples, logits[:, :2])
    with pytest.raises(ValueError, match="f:0 has no label"):
        tasks.score(task, [ClassificationExample("f:0", "a", "b", None)], logits[:1])
    with pytest.raises(ValueError, match="unknown classification task 'cola'"):
        tasks.get_task("cola")


# ---- NLPCC DBQA: answer selection ------------------------------------------------------------------

def test_dbqa_dev_reports_and_leaves_out_its_label_10(caplog):
    path = data_file("dbqa/nlpcc2017.dbqa.dev")
    left_out = []
    with caplog.at_level("WARNING"):
        examples = tasks.get_task("dbqa").read(path, left_out=left_out)
    assert len(examples) == 7444 and "nlpcc2017.dbqa.dev:2549" not in {e.guid for e in examples}
    assert left_out == ["nlpcc2017.dbqa.dev:2549"]  # recorded with the dev scores by cnbert-classify
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{path}: line 2549: label '10' is not one of this task's labels ['0', '1']; "
                        "the record is left out"]
    rows = csv_rows(path, ["label", "text_a", "text_b"])
    kept = [row for row in rows if row["label"] != "10"]
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [(r["text_a"], r["text_b"], r["label"]) for r in kept]
    assert len({e.text_a for e in examples}) == 393
    # the same line is an error for a task that does not expect it
    with pytest.raises(DataError, match="line 2549: label '10'"):
        read_classification_tsv(path, TsvFormat(text_a="text_a", text_b="text_b", label="label", header=False,
                                                columns=("label", "text_a", "text_b")), ("0", "1"))


def reference_ranking(questions, relevant, scores):
    """MRR and MAP by their textbook definitions: per question, walk the candidates by descending
    score (ties in input order); AP = sum over k of precision@k * rel(k), divided by the relevant count."""
    mrr, ap = [], []
    for question in dict.fromkeys(questions):
        members = [i for i, q in enumerate(questions) if q == question]
        ranked = sorted(members, key=lambda i: (-scores[i], i))
        rel = [bool(relevant[i]) for i in ranked]
        if not any(rel):
            continue
        mrr.append(1.0 / (rel.index(True) + 1))
        ap.append(sum(sum(rel[:k + 1]) / (k + 1) for k in range(len(rel)) if rel[k]) / sum(rel))
    return 100 * sum(mrr) / len(mrr), 100 * sum(ap) / len(ap)


def test_ranking_scores_by_hand_and_against_the_textbook_definitions():
    questions = ["q1", "q1", "q1", "q2", "q2", "q3"]
    relevant = np.array([0, 1, 1, 1, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.5, 0.7])
    got = tasks.ranking_scores(questions, relevant, scores)
    # q1: relevant at ranks 2 and 3 (RR 1/2, AP (1/2 + 2/3) / 2); q2: rank 2 (RR 1/2, AP 1/2); q3: none
    assert got["MRR"] == pytest.approx(50.0) and got["MAP"] == pytest.approx(100 * (7 / 12 + 1 / 2) / 2)
    assert got["questions"] == 2 and got["questions_without_answer"] == 1
    # a tie keeps the input order
    tie = tasks.ranking_scores(["q", "q"], np.array([0, 1], bool), np.array([0.5, 0.5]))
    assert tie["MRR"] == pytest.approx(50.0)
    # the real dev questions and answers with random scores
    examples = tasks.get_task("dbqa").read(data_file("dbqa/nlpcc2017.dbqa.dev"))
    questions = [e.text_a for e in examples]
    relevant = np.array([e.label == "1" for e in examples])
    for seed in range(3):
        scores = np.random.default_rng(seed).normal(size=len(examples)).round(1)  # rounding makes ties
        got = tasks.ranking_scores(questions, relevant, scores)
        mrr, map_ = reference_ranking(questions, relevant, scores)
        assert (got["MRR"], got["MAP"]) == pytest.approx((mrr, map_), abs=1e-9)
        assert got["questions"] == 393
    perfect = tasks.ranking_scores(questions, relevant, relevant.astype(float))
    assert perfect["MRR"] == perfect["MAP"] == pytest.approx(100.0)


def test_dbqa_score_ranks_by_label_1_and_reports_pair_f1():
    task = tasks.get_task("dbqa")
    examples = [ClassificationExample(f"f:{i}", q, "s", label) for i, (q, label) in
                enumerate([("q1", "0"), ("q1", "1"), ("q2", "1"), ("q2", "0")])]
    # logit differences (label 1 - label 0): 1, 2, -1, -3 -> q1 ranks its answer first, q2 too;
    # argmax predicts 1, 1, 0, 0: one true positive, one false positive, one false negative
    logits = np.array([[0, 1], [0, 2], [1, 0], [3, 0]], float)
    scores = tasks.score(task, examples, logits)
    assert scores["MRR"] == pytest.approx(100.0) and scores["MAP"] == pytest.approx(100.0)
    assert scores["accuracy"] == pytest.approx(50.0) and scores["F1"] == pytest.approx(50.0)
    assert task.metric_names == ("MRR", "MAP", "accuracy", "F1")
    assert task.criterion(scores) == pytest.approx(200.0)


def test_dbqa_ranks_by_the_probability_of_label_1_not_by_its_logit():
    task = tasks.get_task("dbqa")
    examples = [ClassificationExample("f:0", "q", "s", "0"), ClassificationExample("f:1", "q", "s", "1")]
    # p(1) = sigmoid(l1 - l0): 0.269 for f:0, 0.953 for f:1, so the answer ranks first; the raw
    # label-1 logits (4 > 3) would rank it second (MRR 50)
    scores = tasks.score(task, examples, np.array([[5.0, 4.0], [0.0, 3.0]]))
    assert scores["MRR"] == pytest.approx(100.0) and scores["MAP"] == pytest.approx(100.0)


def test_predictions_file_keeps_every_probability_exactly(tmp_path):
    # two candidates 1e-9 apart in p(1): six decimals would tie them, and a ranking recomputed from
    # the file would fall back to file order
    examples = [ClassificationExample(f"f:{i}", "q", "s", "0") for i in range(2)]
    logits = np.array([[0.0, 8.0], [0.0, 8.0 + 3e-6]])
    predictions = tasks.ClassificationPredictions(examples, ("0", "1"), logits)
    rows = [line.split("\t") for line in predictions.write(tmp_path).read_text().splitlines()[1:]]
    written = np.array([[float(value) for value in row[2:]] for row in rows])
    assert np.array_equal(written, predictions.probabilities) and written[0, 1] < written[1, 1]


def test_dbqa_f1_is_that_of_label_1():
    task = tasks.get_task("dbqa")
    examples = [ClassificationExample(f"f:{i}", "q", "s", label) for i, label in enumerate("1000")]
    # predicted 1, 1, 0, 0: for label 1 precision 1/2, recall 1, F1 2/3 (label 0's would be 80)
    logits = np.array([[0, 1], [0, 1], [1, 0], [1, 0]], float)
    assert tasks.score(task, examples, logits)["F1"] == pytest.approx(200 / 3)


def test_text_to_classify_may_leave_out_the_label_of_a_headerless_format(tmp_path, caplog):
    news = write(tmp_path, "湖人赢了\n股市大涨\n", "news.txt")
    assert [(e.text_a, e.label) for e in tasks.get_task("thucnews").read(news, labelled=False)] == [
        ("湖人赢了", None), ("股市大涨", None)]
    with pytest.raises(DataError, match="line 1: 1 tab-separated fields, expected 2"):
        tasks.get_task("thucnews").read(news)
    dbqa = tasks.get_task("dbqa")
    pairs = write(tmp_path, "0\t问\t答一\n10\t问\t答二\n", "pairs.txt")
    with caplog.at_level("WARNING"):
        kept = dbqa.read(pairs, labelled=False)  # every line is predicted, even one with a bad label
    assert [(e.guid, e.label) for e in kept] == [("pairs.txt:1", "0"), ("pairs.txt:2", None)]
    assert ("line 2: label '10' is not one of this task's labels ['0', '1']; the line is predicted but left out of "
            "the score") in caplog.text
    assert [e.guid for e in dbqa.read(pairs)] == ["pairs.txt:1"]  # to train or score, it is left out


def test_answer_selection_needs_a_candidate_labelled_1(tmp_path):
    dbqa = tasks.get_task("dbqa")
    path = write(tmp_path, "0\t问\t答一\n0\t问\t答二\n", "dev.txt")
    examples = dbqa.read(path)
    assert not tasks.scorable(dbqa, examples) and tasks.scorable(tasks.get_task("lcqmc"), examples)
    with pytest.raises(DataError, match=r"dev.txt: no candidate is labelled '1', so no question can be ranked"):
        tasks.check_scorable(dbqa, examples, path)
