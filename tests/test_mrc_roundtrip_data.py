"""Round trip over the real files: examples → training features → logits that put all their mass on
the labelled positions → post-processing must give back the gold answer text (for DRCD the original
traditional text), except where the gold itself cannot be produced by slicing whole word pieces.

Which questions cannot come back exactly is predicted from the data and the tokenizer alone (not
from the predictions), then compared with what post-processing returns:
- gold with leading / trailing whitespace: pieces never include whitespace, so the best possible
  answer is the stripped gold (CMRC 2018 train: e.g. TRAIN_1142_QUERY_2 "...泰国国王. ").
- gold starting or ending inside a word piece: the label must take in the whole piece, so the
  answer is wider than the gold (e.g. 1933年 inside "1928～1933年", pieces 1928 ##～1 ##93 ##3; DRCD
  1180-23-1 "8" inside the piece "80").
Every other question must come back exactly. Gold offsets that the reader could not locate (none
in these files) would be counted too.
"""
import numpy as np
import pytest

from cnbert.data import FeatureConfig, build_features, postprocess_predictions, read_cmrc2018, read_drcd
from cnbert.data.mrc_features import answer_token_span
from cnbert.tokenization import ChineseBertTokenizer
from conftest import data_file

CONFIG = FeatureConfig(max_seq_length=512, max_query_length=64, doc_stride=128)
MAX_ANSWER_PIECES = 128  # above the longest gold answer (asserted below)


def expected_outcome(example, offsets):
    """'exact', 'whitespace' or 'inside a piece', from the gold offsets and the passage's pieces."""
    answer = example.training_answer
    text = answer.text
    start = answer.answer_start + len(text) - len(text.lstrip())
    end = answer.answer_end - (len(text) - len(text.rstrip()))
    if start not in set(offsets[:, 0].tolist()) or end not in set(offsets[:, 1].tolist()):
        return "inside a piece"
    return "whitespace" if text != text.strip() else "exact"


def round_trip(result, tokenizer):
    examples, report = result
    features = build_features(examples, tokenizer, CONFIG, training=True)
    start = np.full(features.input_ids.shape, -1e4)
    end = np.full(features.input_ids.shape, -1e4)
    holds = np.flatnonzero(features.start_positions > 0)
    start[holds, features.start_positions[holds]] = 10.0
    end[holds, features.end_positions[holds]] = 10.0
    predictions = postprocess_predictions(examples, features, start, end, max_answer_length=MAX_ANSWER_PIECES)

    passages = {}
    outcomes, pieces = {}, {}
    for example in examples:
        if example.model_context not in passages:
            passages[example.model_context] = np.array(tokenizer.encode(example.model_context).offsets)
        offsets = passages[example.model_context]
        answer = example.training_answer
        first, last = answer_token_span(offsets, answer.answer_start, answer.answer_end)
        pieces[example.qas_id] = last - first + 1
        expected = expected_outcome(example, offsets)
        outcomes.setdefault(expected, []).append(example.qas_id)
        predicted = predictions.answers[example.qas_id]
        if expected == "exact":
            assert predicted == answer.text, example.qas_id
        elif expected == "whitespace":
            assert predicted == answer.text.strip(), example.qas_id
        else:
            assert predicted != answer.text and answer.text.strip() in predicted, example.qas_id
    return report, features, outcomes, pieces


@pytest.fixture(scope="module")
def tokenizer():
    return ChineseBertTokenizer()


@pytest.mark.data
@pytest.mark.slow
def test_cmrc2018_train_round_trip(tokenizer):
    report, features, outcomes, pieces = round_trip(read_cmrc2018(data_file("cmrc2018/cmrc2018_train.json")),
                                                    tokenizer)
    assert report.inconsistent == () and len(report.repaired) == 21 and features.unlabelled_qas_ids == ()
    # Measured: 37 golds padded with spaces, 5 starting or ending inside a piece
    # (TRAIN_1107_QUERY_1 "984年..." inside "1984", TRAIN_1216_QUERY_3 "R货物..." inside "JR",
    # TRAIN_1243_QUERY_2 "06年..." inside "2006", TRAIN_2521_QUERY_2 "010年..." inside "2010",
    # TRAIN_3722_QUERY_4 "1933年" inside "1928～1933年").
    assert {k: len(v) for k, v in outcomes.items()} == {"exact": 10100, "whitespace": 37, "inside a piece": 5}
    assert sorted(outcomes["inside a piece"]) == ["TRAIN_1107_QUERY_1", "TRAIN_1216_QUERY_3", "TRAIN_1243_QUERY_2",
                                                  "TRAIN_2521_QUERY_2", "TRAIN_3722_QUERY_4"]
    # Gold answers are long in CMRC 2018: the longest spans 118 pieces and 692 questions' answers
    # exceed the original list's max_answer_length of 50 (such answers can never be predicted whole).
    assert max(pieces.values()) == 118
    assert sum(n > 50 for n in pieces.values()) == 692


@pytest.mark.data
def test_drcd_dev_round_trip_returns_traditional_text(tokenizer):
    report, features, outcomes, pieces = round_trip(read_drcd(data_file("drcd/DRCD_dev.json")), tokenizer)
    assert report.inconsistent == () and report.conversion_fallbacks == 0 and features.unlabelled_qas_ids == ()
    # Measured: two golds are one digit of a number piece: "8" of "80" (1180-23-1) and of "81" (1194-6-3).
    assert {k: len(v) for k, v in outcomes.items()} == {"exact": 3522, "inside a piece": 2}
    assert sorted(outcomes["inside a piece"]) == ["1180-23-1", "1194-6-3"]
    assert max(pieces.values()) == 38 and sum(n > 50 for n in pieces.values()) == 0
