"""Features: [CLS] question [SEP] window [SEP] layout, sliding windows, max-context flags, labels."""
import collections
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from cnbert.data import (IGNORE_INDEX, NOT_CONTEXT, AnswerKind, FeatureConfig, MrcAnswer, MrcExample, build_features,
                         read_cjrc, read_cmrc2018, read_drcd)
from cnbert.data.mrc_features import answer_token_span
from cnbert.data.windows import doc_windows, max_context_window
from cnbert.tokenization import ChineseBertTokenizer
from conftest import FIXTURES, data_file

SMALL = FeatureConfig(max_seq_length=64, max_query_length=16, doc_stride=20)


@pytest.fixture(scope="module")
def tokenizer():
    return ChineseBertTokenizer()


@pytest.fixture(scope="module")
def cmrc_sample():
    return read_cmrc2018(FIXTURES / "mrc_cmrc2018_sample.json").examples


def test_the_data_layer_imports_no_deep_learning_framework():
    code = ("import sys, cnbert.data; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras', 'jax')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Sizes and windows

@pytest.mark.parametrize("kwargs, message", [
    (dict(max_seq_length=0), "max_seq_length must be a positive integer"),
    (dict(max_query_length=True), "max_query_length must be a positive integer"),
    (dict(doc_stride=12.5), "doc_stride must be a positive integer"),
    (dict(max_seq_length=67, max_query_length=64), r"at least max_query_length \+ 4 = 68"),
    (dict(max_seq_length=128, max_query_length=64, doc_stride=62), r"doc_stride \(62\) is larger than .* = 61"),
])
def test_feature_config_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**kwargs)


def test_feature_config_accepts_the_tightest_sizes():
    config = FeatureConfig(max_seq_length=68, max_query_length=64, doc_stride=1)
    assert config.min_window_tokens == 1
    assert FeatureConfig(max_seq_length=128, max_query_length=64, doc_stride=61).doc_stride == 61


def test_doc_windows_step_by_doc_stride_and_end_at_the_last_piece():
    assert doc_windows(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert doc_windows(11, 4, 3) == [(0, 4), (3, 4), (6, 4), (9, 2)]
    assert doc_windows(4, 4, 2) == [(0, 4)]
    assert doc_windows(3, 10, 5) == [(0, 3)]
    assert doc_windows(0, 10, 5) == []
    assert doc_windows(1000, 445, 128) == [(0, 445), (128, 445), (256, 445), (384, 445), (512, 445), (640, 360)]


def google_is_max_context(doc_spans, cur_span_index, position):
    """google-research/bert run_squad.py `_check_is_max_context`, transcribed."""
    best_score, best_span_index = None, None
    for span_index, (start, length) in enumerate(doc_spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_span_index = score, span_index
    return cur_span_index == best_span_index


# with an even stride ((6, 4, 2), (40, 8, 4)) a token can have as much context in two windows: the tie
# (the first wins) catches a right-edge count off by one
@pytest.mark.parametrize("num_tokens, window, stride", [(10, 4, 3), (11, 4, 3), (57, 16, 5), (300, 100, 37), (5, 8, 8),
                                                      (6, 4, 2), (40, 8, 4)])
def test_max_context_matches_run_squad(num_tokens, window, stride):
    windows = doc_windows(num_tokens, window, stride)
    best = max_context_window(num_tokens, windows)
    for index, (start, length) in enumerate(windows):
        for position in range(start, start + length):
            assert (best[position] == index) == google_is_max_context(windows, index, position)


def test_answer_token_span_covers_partial_pieces():
    offsets = np.array([[0, 4], [4, 6], [6, 8], [9, 10]], dtype=np.int32)  # e.g. "1928" "##～1" "##93" gap "年"
    assert answer_token_span(offsets, 5, 10) == (1, 3)
    assert answer_token_span(offsets, 4, 6) == (1, 1)
    assert answer_token_span(offsets, 0, 1) == (0, 0)
    assert answer_token_span(offsets, 8, 9) is None  # only the gap (a space)


# ---------------------------------------------------------------------------------------------
# Layout and labels on the fixture

def test_layout_of_every_feature(tokenizer, cmrc_sample):
    features = build_features(cmrc_sample, tokenizer, SMALL, training=False)
    n = len(features)
    assert features.input_ids.shape == features.token_type_ids.shape == features.attention_mask.shape == (n, 64)
    assert features.context_offsets.shape == (n, 64, 2) and features.token_is_max_context.shape == (n, 64)
    assert features.input_ids.dtype == features.token_type_ids.dtype == features.attention_mask.dtype == np.int64
    assert features.context_offsets.dtype == np.int32 and features.token_is_max_context.dtype == bool
    assert list(features.example_index) == sorted(features.example_index)
    assert set(features.example_index) == set(range(len(cmrc_sample)))
    for f in range(n):
        example = cmrc_sample[features.example_index[f]]
        question = tokenizer.encode(example.question_text).ids[:16]
        context = tokenizer.encode(example.context_text)
        q, length = len(question), int(features.attention_mask[f].sum()) - len(question) - 3
        window_start = features.window_index[f] * SMALL.doc_stride
        ids = features.input_ids[f]
        assert ids[0] == 101 and list(ids[1:q + 1]) == question and ids[q + 1] == 102
        assert list(ids[q + 2:q + 2 + length]) == context.ids[window_start:window_start + length]
        assert ids[q + 2 + length] == 102 and not ids[q + 3 + length:].any()
        assert length == min(64 - q - 3, len(context.ids) - window_start)
        assert list(features.token_type_ids[f]) == [0] * (q + 2) + [1] * (length + 1) + [0] * (61 - q - length)
        assert list(features.attention_mask[f]) == [1] * (q + 3 + length) + [0] * (61 - q - length)
        offsets = features.context_offsets[f]
        assert [tuple(o) for o in offsets[q + 2:q + 2 + length]] == context.offsets[window_start:window_start + length]
        assert (offsets[:q + 2] == NOT_CONTEXT).all() and (offsets[q + 2 + length:] == NOT_CONTEXT).all()
        assert not features.token_is_max_context[f, :q + 2].any()
        assert not features.token_is_max_context[f, q + 2 + length:].any()


def test_each_context_piece_is_max_context_in_exactly_one_window(tokenizer, cmrc_sample):
    features = build_features(cmrc_sample, tokenizer, SMALL, training=False)
    for example_index, example in enumerate(cmrc_sample):
        rows = np.flatnonzero(features.example_index == example_index)
        assert len(rows) == len(doc_windows(len(tokenizer.encode(example.context_text)), 64 - 3 - len(
            tokenizer.encode(example.question_text).ids[:16]), 20))
        counts = collections.Counter(tuple(features.context_offsets[f, j]) for f in rows
                                     for j in np.flatnonzero(features.token_is_max_context[f]))
        all_pieces = set(tokenizer.encode(example.context_text).offsets)
        assert set(counts) == all_pieces
        # Hangul jamo share one character's offsets, so one offset may stand for several pieces.
        assert sum(counts.values()) == len(tokenizer.encode(example.context_text))
    assert features.start_positions is None and features.end_positions is None


def test_labels_point_at_the_answer_in_windows_that_hold_it(tokenizer, cmrc_sample):
    features = build_features(cmrc_sample, tokenizer, SMALL, training=True)
    assert len(features) > 3 * len(cmrc_sample)  # long passages, short windows: many per question
    # Its answer has 46 pieces; its windows hold 46 and start every 20 pieces, so none holds the
    # whole answer: no training features rather than windows that all say "not here".
    assert features.unlabelled_qas_ids == ("TRAIN_186_QUERY_3",)
    assert features.start_positions.dtype == features.end_positions.dtype == np.int64
    assert features.answer_class is None
    labelled = collections.Counter()
    for f in range(len(features)):
        example = cmrc_sample[features.example_index[f]]
        answer = example.training_answer
        start, end = features.start_positions[f], features.end_positions[f]
        offsets = features.context_offsets[f]
        window_chars = offsets[offsets[:, 0] >= 0]
        holds_answer = window_chars[0, 0] <= answer.answer_start and answer.answer_end <= window_chars[-1, 1]
        if start == 0:
            assert end == 0 and not holds_answer
            continue
        labelled[example.qas_id] += 1
        assert start <= end and offsets[start, 0] >= 0 and offsets[end, 0] >= 0
        text = example.context_text[offsets[start, 0]:offsets[end, 1]]
        assert answer.text.strip() in text and len(text) <= len(answer.text) + 3
    assert set(labelled) == {e.qas_id for e in cmrc_sample} - {"TRAIN_186_QUERY_3"}
    # 1933年 in 1928～1933年 starts inside the piece ##～1: the label takes in the whole piece.
    index = next(i for i, e in enumerate(cmrc_sample) if e.qas_id == "TRAIN_3722_QUERY_4")
    f = next(f for f in np.flatnonzero(features.example_index == index) if features.start_positions[f])
    offsets = features.context_offsets[f]
    start, end = features.start_positions[f], features.end_positions[f]
    text = cmrc_sample[index].context_text[offsets[start, 0]:offsets[end, 1]]
    assert text == "～1933年"


def test_question_is_cut_to_max_query_length(tokenizer):
    example = MrcExample("q", "问" * 30, "答案在这里。", (MrcAnswer("答案", 0),))
    features = build_features([example], tokenizer, FeatureConfig(max_seq_length=32, max_query_length=8, doc_stride=4),
                              training=True)
    assert len(features) == 1
    assert list(features.input_ids[0, :11]) == [101] + [tokenizer.token_to_id("问")] * 8 + [102,
                                                                                            tokenizer.token_to_id("答")]
    assert (features.start_positions[0], features.end_positions[0]) == (10, 11)


def test_unlabelled_questions_are_left_out_and_listed(tokenizer, caplog):
    examples = [MrcExample("good", "什么？", "甲乙丙丁", (MrcAnswer("乙丙", 1),)),
                MrcExample("lost", "什么？", "甲乙丙丁", (MrcAnswer("戊", None),)),
                MrcExample("blank", "什么？", "甲 乙", (MrcAnswer(" ", 1),))]
    features = build_features(examples, tokenizer, SMALL, training=True)
    assert features.unlabelled_qas_ids == ("lost", "blank")
    assert list(features.example_index) == [0]
    assert "lost, blank" in caplog.text
    assert len(build_features(examples, tokenizer, SMALL, training=False)) == 3


def test_model_arrays_names_inputs_and_labels(tokenizer, cmrc_sample):
    arrays = build_features(cmrc_sample[:2], tokenizer, SMALL, training=True).model_arrays()
    assert list(arrays) == ["input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"]
    assert list(build_features(cmrc_sample[:2], tokenizer, SMALL, training=False).model_arrays()) == [
        "input_ids", "token_type_ids", "attention_mask"]


def test_drcd_features_read_the_simplified_text(tokenizer):
    examples = read_drcd(FIXTURES / "mrc_drcd_sample.json").examples
    features = build_features(examples, tokenizer, FeatureConfig(max_seq_length=256, max_query_length=32,
                                                                  doc_stride=64), training=True)
    f = int(np.flatnonzero(features.example_index == 1)[0])  # 1156-2-2, answer 都市計畫
    start, end = features.start_positions[f], features.end_positions[f]
    assert tokenizer.convert_ids_to_tokens(features.input_ids[f, start:end + 1]) == ["都", "市", "计", "划"]
    offsets = features.context_offsets[f]
    assert examples[1].context_text[offsets[start, 0]:offsets[end, 1]] == "都市計畫"


# ---------------------------------------------------------------------------------------------
# CJRC classes

CJRC_CONTEXT = ("经审理查明：原告王某与被告李某于2015年签订借款合同，约定借款5万元，利息按月计算。"
                "被告至今未归还借款，原告多次催要未果。另查明，被告李某系个体工商户，经营一家餐馆。") * 2


def cjrc_examples(tmp_path):
    start = CJRC_CONTEXT.index("餐馆", 60)
    qas = [
        {"id": "span", "question": "被告经营什么？", "is_impossible": "false",
         "answers": [{"text": "餐馆", "answer_start": start}]},
        {"id": "yes", "question": "被告是否借款？", "is_impossible": "false", "answers": [{"text": "YES", "answer_start": -1}]},
        {"id": "no", "question": "被告是否还款？", "is_impossible": "false", "answers": [{"text": "NO", "answer_start": -1}]},
        {"id": "unknown", "question": "被告住在哪里？", "is_impossible": "true", "answers": [{"text": "", "answer_start": -1}]},
    ]
    path = tmp_path / "cjrc.json"
    path.write_text(json.dumps({"data": [{"caseid": "1", "domain": "civil", "paragraphs": [
        {"context": CJRC_CONTEXT, "casename": "借款", "qas": qas}]}]}, ensure_ascii=False), encoding="utf-8")
    return read_cjrc(path).examples


def test_cjrc_class_labels(tokenizer, tmp_path):
    examples = cjrc_examples(tmp_path)
    config = FeatureConfig(max_seq_length=64, max_query_length=16, doc_stride=24)
    features = build_features(examples, tokenizer, config, training=True, answer_classes=True)
    by_question = collections.defaultdict(list)
    for f in range(len(features)):
        by_question[examples[features.example_index[f]].qas_id].append(
            (int(features.answer_class[f]), int(features.start_positions[f]), int(features.end_positions[f])))
    span_windows = by_question["span"]
    assert len(span_windows) > 2
    # Only the windows holding the answer say "span"; the others are left out of the class loss,
    # never called unknown.
    holding = [w for w in span_windows if w[0] == AnswerKind.SPAN]
    assert holding and all(start > 0 for _, start, _ in holding)
    assert all(w == (IGNORE_INDEX, 0, 0) for w in span_windows if w[0] != AnswerKind.SPAN)
    for qas_id, kind in (("yes", AnswerKind.YES), ("no", AnswerKind.NO), ("unknown", AnswerKind.UNKNOWN)):
        assert by_question[qas_id] and set(by_question[qas_id]) == {(int(kind), 0, 0)}
    assert features.answer_class.dtype == np.int64


def test_class_labels_are_required_for_yes_no_questions(tokenizer, tmp_path):
    examples = cjrc_examples(tmp_path)
    with pytest.raises(ValueError, match="question yes: its training answer is YES"):
        build_features(examples, tokenizer, SMALL, training=True)
    with pytest.raises(ValueError, match="training=True"):
        build_features(examples, tokenizer, SMALL, training=False, answer_classes=True)
    assert build_features(examples, tokenizer, SMALL, training=False).start_positions is None


# ---------------------------------------------------------------------------------------------
# Real data: speed and coverage

@pytest.mark.data
@pytest.mark.slow
def test_cmrc2018_train_featurises_fast(tokenizer):
    examples = read_cmrc2018(data_file("cmrc2018/cmrc2018_train.json")).examples
    started = time.perf_counter()
    features = build_features(examples, tokenizer, FeatureConfig(), training=True)
    seconds = time.perf_counter() - started
    # Measured: 17088 windows for 10142 questions at 512 / 64 / 128, every answer inside at least one.
    assert len(features) == 17088 and features.unlabelled_qas_ids == ()
    assert set(features.example_index[features.start_positions > 0]) == set(range(len(examples)))
    assert seconds < 40, f"{seconds:.1f} s"


@pytest.mark.data
def test_cjrc_dev_features(tokenizer):
    examples = read_cjrc(data_file("cjrc/dev_ground_truth.json")).examples
    features = build_features(examples, tokenizer, FeatureConfig(), training=True, answer_classes=True)
    assert features.unlabelled_qas_ids == ()
    classes = collections.Counter(features.answer_class.tolist())
    # Measured window counts per class; every span question has a window labelled span.
    assert classes == {0: 5594, IGNORE_INDEX: 4108, 3: 3021, 1: 1098, 2: 519}
    span_questions = {i for i, e in enumerate(examples) if e.answer_kind == AnswerKind.SPAN}
    assert set(features.example_index[features.answer_class == 0]) == span_questions
