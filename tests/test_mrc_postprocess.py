"""Post-processing: n-best spans over windows, the validity rules, CJRC's class decision, outputs."""
import itertools
import json

import numpy as np
import pytest

from cnbert.data import (AnswerKind, FeatureConfig, MrcAnswer, MrcExample, build_features, postprocess_predictions,
                         read_drcd)
from cnbert.tokenization import ChineseBertTokenizer
from conftest import FIXTURES

LOW = -50.0
# 40 one-character pieces; with a 2-piece question, windows hold 27 pieces and start every 8:
# pieces 0..26, 8..34 and 16..39.
CONTEXT = "甲乙丙丁戊己庚辛壬癸" * 4
CONFIG = FeatureConfig(max_seq_length=32, max_query_length=4, doc_stride=8)


@pytest.fixture(scope="module")
def tokenizer():
    return ChineseBertTokenizer()


def example(qas_id="q", context=CONTEXT, question="问题"):
    return MrcExample(qas_id, question, context, (MrcAnswer(context[:1], 0),))


def features_of(tokenizer, examples, config=CONFIG):
    return build_features(examples, tokenizer, config, training=False)


def flat_logits(features):
    return np.full(features.input_ids.shape, LOW), np.full(features.input_ids.shape, LOW)


def position(features, f, char_start):
    """Index in feature f of the piece starting at char_start."""
    return int(np.flatnonzero(features.context_offsets[f, :, 0] == char_start)[0])


def test_best_span_across_windows_is_sliced_from_the_context(tokenizer):
    examples = [example()]
    features = features_of(tokenizer, examples)
    assert len(features) == 3
    start, end = flat_logits(features)
    start[0, position(features, 0, 2)], end[0, position(features, 0, 4)] = 5, 5  # 丙丁戊, score 10
    start[2, position(features, 2, 30)], end[2, position(features, 2, 33)] = 6, 6  # 甲乙丙丁 (30..34), score 12
    predictions = postprocess_predictions(examples, features, start, end)
    assert predictions.answers == {"q": "甲乙丙丁"}
    best, second = predictions.nbest["q"][:2]
    assert (best.char_start, best.char_end, best.start_logit, best.end_logit) == (30, 34, 6.0, 6.0)
    assert (second.text, second.char_start, second.char_end) == ("丙丁戊", 2, 5)
    assert predictions.kinds == {"q": AnswerKind.SPAN} and predictions.class_scores == {}


def test_an_answer_ending_in_a_combining_mark_keeps_it(tokenizer):
    # Accent stripping drops combining marks, so a piece's end offset would stop before a final one
    # (CMRC 2018 trial question TRIAL_161_QUERY_2's answer ends in U+05BC, a Hebrew vowel point).
    context = "先知耶利米（יִרְמְיָהוּ）的书"
    answer = "יִרְמְיָהוּ"
    examples = [MrcExample("q", "谁", context, (MrcAnswer(answer, context.index(answer)),))]
    features = features_of(tokenizer, examples)
    start, end = flat_logits(features)
    piece = position(features, 0, context.index(answer))
    start[0, piece], end[0, piece] = 5, 5
    assert postprocess_predictions(examples, features, start, end).answers == {"q": answer}
    trained = build_features(examples, tokenizer, CONFIG, training=True)
    assert (trained.start_positions[0], trained.end_positions[0]) == (piece, piece)


def test_spans_too_long_or_starting_outside_their_max_context_window_are_not_candidates(tokenizer):
    examples = [example()]
    features = features_of(tokenizer, examples)
    start, end = flat_logits(features)
    start[0, position(features, 0, 0)], end[0, position(features, 0, 12)] = 70, 70  # 13 pieces
    # Piece 22 has more context in window 1 (8..34) than in window 0 (0..26).
    assert not features.token_is_max_context[0, position(features, 0, 22)]
    start[0, position(features, 0, 22)], end[0, position(features, 0, 23)] = 60, 60
    spans = [(c.char_start, c.char_end) for c in postprocess_predictions(
        examples, features, start, end, n_best_size=40, max_answer_length=8).nbest["q"]]
    assert (0, 13) not in spans and (22, 24) not in spans
    assert all(e - s <= 8 for s, e in spans)  # one character per piece here
    wide = postprocess_predictions(examples, features, start, end, max_answer_length=13)
    assert wide.answers["q"] == CONTEXT[0:13]


def test_no_valid_span_gives_an_empty_answer(tokenizer):
    examples = [example()]
    features = features_of(tokenizer, examples)
    start, end = flat_logits(features)
    for f in range(len(features)):
        # With n_best_size 1, each window offers one start (its last max-context piece) and one end
        # (its first piece), which ends before it starts.
        max_context = np.flatnonzero(features.token_is_max_context[f])
        start[f, max_context[-1]] = 9
        end[f, np.flatnonzero(features.context_offsets[f, :, 0] >= 0)[0]] = 9
    predictions = postprocess_predictions(examples, features, start, end, n_best_size=1)
    assert predictions.answers == {"q": ""} and predictions.nbest == {"q": []}


def test_an_example_without_features_gets_an_empty_answer(tokenizer):
    examples = [example("a"), example("b", context="\u200b\u200b")]  # no pieces at all
    features = features_of(tokenizer, examples)
    assert set(features.example_index) == {0}
    start, end = flat_logits(features)
    assert postprocess_predictions(examples, features, start, end).answers["b"] == ""


def brute_force(example, features, rows, start, end, max_answer_length):
    """Every valid (start, end) pair of every window, deduplicated by character span."""
    best = {}
    for f in rows:
        offsets = features.context_offsets[f]
        for s, e in itertools.product(range(offsets.shape[0]), repeat=2):
            if offsets[s, 0] < 0 or offsets[e, 0] < 0 or not features.token_is_max_context[f, s]:
                continue
            if e < s or e - s + 1 > max_answer_length:
                continue
            span = (int(offsets[s, 0]), int(offsets[e, 1]))
            best[span] = max(best.get(span, -np.inf), start[f, s] + end[f, e])
    return sorted(best.items(), key=lambda item: -item[1])


@pytest.mark.parametrize("chunk", [None, 2], ids=["one-chunk", "chunks-of-2"])
def test_n_best_equals_exhaustive_search_when_n_best_covers_every_piece(tokenizer, monkeypatch, chunk):
    if chunk:  # candidate pairs are found a chunk of features at a time: splitting must not change them
        monkeypatch.setattr("cnbert.data.mrc_postprocess._PAIR_CHUNK", chunk)
    rng = np.random.default_rng(7)
    examples = [example("a"), example("b", context="乙" * 5 + "Hello world 한국 Straße" + "丙" * 30)]
    features = features_of(tokenizer, examples)
    assert len(features) > 2 * 2
    start, end = rng.normal(size=features.input_ids.shape), rng.normal(size=features.input_ids.shape)
    start[:, :4] = end[:, :4] = 100  # [CLS], the question and [SEP] must never win
    predictions = postprocess_predictions(examples, features, start, end, n_best_size=32, max_answer_length=6)
    for index, ex in enumerate(examples):
        expected = brute_force(ex, features, np.flatnonzero(features.example_index == index), start, end, 6)[:32]
        got = predictions.nbest[ex.qas_id]
        assert [(c.char_start, c.char_end) for c in got] == [span for span, _ in expected]
        assert np.allclose([c.start_logit + c.end_logit for c in got], [score for _, score in expected])
        scores = np.array([score for _, score in expected])
        assert np.allclose([c.probability for c in got], np.exp(scores) / np.exp(scores).sum(), rtol=1e-12)
        assert all(c.text == ex.context_text[c.char_start:c.char_end] for c in got)
        assert predictions.answers[ex.qas_id] == got[0].text


def test_pieces_sharing_one_character_give_one_candidate(tokenizer):
    examples = [example(context="我们 한국 朋友")]
    features = features_of(tokenizer, examples)
    assert len(features) == 1
    han = np.flatnonzero(features.context_offsets[0, :, 0] == 3)  # ᄒ ##ᅡ ##ᆫ, all at character 3
    assert len(han) == 3
    start, end = flat_logits(features)
    start[0, han] = [3.0, 2.0, 1.0]
    end[0, han] = [1.0, 2.0, 3.0]
    nbest = postprocess_predictions(examples, features, start, end, n_best_size=5).nbest["q"]
    assert [(c.char_start, c.char_end) for c in nbest].count((3, 4)) == 1
    best = nbest[0]
    assert (best.text, best.start_logit, best.end_logit) == ("한", 3.0, 3.0)
    assert len(nbest) == 5 and abs(sum(c.probability for c in nbest) - 1) < 1e-12


def test_drcd_answers_come_from_the_traditional_text(tokenizer):
    examples = read_drcd(FIXTURES / "mrc_drcd_sample.json").examples[:3]
    features = build_features(examples, tokenizer, FeatureConfig(max_seq_length=128, max_query_length=32,
                                                                  doc_stride=32), training=True)
    start, end = flat_logits(features)
    has = features.start_positions > 0
    start[has, features.start_positions[has]] = end[has, features.end_positions[has]] = 10
    answers = postprocess_predictions(examples, features, start, end).answers
    assert answers == {"1156-2-1": "地價", "1156-2-2": "都市計畫", "1156-2-3": "早期"}


# ---------------------------------------------------------------------------------------------
# CJRC class decision

def class_row(span=0.0, yes=0.0, no=0.0, unknown=0.0):
    return [span, yes, no, unknown]


@pytest.fixture()
def one_window(tokenizer):
    examples = [MrcExample("c", "问题", "被告经营一家餐馆。", (MrcAnswer("餐馆", 6),))]
    features = features_of(tokenizer, examples, FeatureConfig(max_seq_length=32, max_query_length=4, doc_stride=8))
    start, end = flat_logits(features)
    start[0, position(features, 0, 6)], end[0, position(features, 0, 7)] = 5, 5
    return examples, features, start, end


@pytest.mark.parametrize("row, threshold, answer, kind", [
    (class_row(span=3), 0.0, "餐馆", AnswerKind.SPAN),
    (class_row(yes=3), 0.0, "YES", AnswerKind.YES),
    (class_row(no=3), 0.0, "NO", AnswerKind.NO),
    (class_row(unknown=3), 0.0, "", AnswerKind.UNKNOWN),
    (class_row(span=2, unknown=2.5), 0.0, "", AnswerKind.UNKNOWN),
    (class_row(span=2, unknown=2.5), 0.5, "餐馆", AnswerKind.SPAN),  # 0.5 is not > 0.5
    (class_row(yes=2, unknown=2.5), 0.4, "", AnswerKind.UNKNOWN),
])
def test_cjrc_class_decision_and_threshold(one_window, row, threshold, answer, kind):
    examples, features, start, end = one_window
    predictions = postprocess_predictions(examples, features, start, end, class_logits=np.array([row]),
                                          null_score_threshold=threshold)
    assert predictions.answers == {"c": answer} and predictions.kinds == {"c": kind}
    log_probs = np.array(row) - np.log(np.exp(row).sum())
    assert np.allclose(predictions.class_scores["c"], log_probs)
    assert predictions.nbest["c"][0].text == "餐馆"  # the span n-best is kept whatever the class


@pytest.mark.parametrize("row, answer, kind", [
    (class_row(span=3, yes=1), "YES", AnswerKind.YES),
    (class_row(span=3, no=0.5, unknown=1), "", AnswerKind.UNKNOWN),
])
def test_cjrc_span_class_without_a_valid_span_yields_to_the_next_class(one_window, row, answer, kind):
    examples, features, start, end = one_window
    start, end = flat_logits(features)
    start[0, position(features, 0, 6)], end[0, position(features, 0, 0)] = 5, 5  # the best end precedes the best start
    predictions = postprocess_predictions(examples, features, start, end, class_logits=np.array([row]), n_best_size=1)
    assert predictions.nbest == {"c": []}
    assert predictions.answers == {"c": answer} and predictions.kinds == {"c": kind}


def test_cjrc_unknown_needs_every_window_and_answers_need_one(tokenizer):
    examples = [example("c")]
    features = features_of(tokenizer, examples)
    start, end = flat_logits(features)
    # Pieces 20 and 21 are max context in window 1 (8..34).
    start[1, position(features, 1, 20)] = end[1, position(features, 1, 21)] = 4
    # Windows 0 and 2 are sure there is no answer; window 1 is sure of a span.
    rows = np.array([class_row(unknown=6), class_row(span=6), class_row(unknown=6)])
    predictions = postprocess_predictions(examples, features, start, end, class_logits=rows)
    assert predictions.answers == {"c": CONTEXT[20:22]}
    scores = predictions.class_scores["c"]
    log_probs = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
    assert np.allclose(scores, [log_probs[:, 0].max(), log_probs[:, 1].max(), log_probs[:, 2].max(),
                                log_probs[:, 3].min()])
    rows[1] = class_row(span=1, unknown=6)
    assert postprocess_predictions(examples, features, start, end, class_logits=rows).answers == {"c": ""}


# ---------------------------------------------------------------------------------------------
# Outputs and argument checks

def test_write_creates_both_files_atomically(tokenizer, tmp_path, one_window):
    examples, features, start, end = one_window
    predictions = postprocess_predictions(examples, features, start, end, n_best_size=3)
    paths = predictions.write(tmp_path / "out")
    assert [p.name for p in paths] == ["predictions.json", "nbest_predictions.json"]
    assert json.loads(paths[0].read_text(encoding="utf-8")) == {"c": "餐馆"}
    nbest = json.loads(paths[1].read_text(encoding="utf-8"))
    assert list(nbest) == ["c"] and len(nbest["c"]) == 3
    assert set(nbest["c"][0]) == {"text", "probability", "start_logit", "end_logit"}
    assert nbest["c"][0]["text"] == "餐馆" and nbest["c"][0]["start_logit"] == 5.0
    assert "餐馆" in paths[0].read_text(encoding="utf-8")  # readable UTF-8, not \\u escapes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["nbest_predictions.json", "predictions.json"]


def test_cjrc_writes_the_class_scores_its_threshold_is_tuned_on(tmp_path, one_window):
    examples, features, start, end = one_window
    row = class_row(span=2, unknown=2.5)
    predictions = postprocess_predictions(examples, features, start, end, class_logits=np.array([row]))
    paths = predictions.write(tmp_path)
    assert [p.name for p in paths] == ["predictions.json", "nbest_predictions.json", "class_scores.json"]
    written = json.loads(paths[2].read_text(encoding="utf-8"))
    log_probs = np.array(row) - np.log(np.exp(row).sum())
    assert list(written) == ["c"] and written["c"]["answer_kind"] == "unknown"
    assert np.allclose([written["c"][k] for k in ("span", "yes", "no", "unknown")], log_probs)
    # unknown wins by 0.5 here: what a threshold of 0.5 or more would turn into the span answer
    assert written["c"]["unknown"] - max(written["c"]["span"], written["c"]["yes"], written["c"]["no"]) == \
        pytest.approx(0.5)


def test_argument_checks(one_window):
    examples, features, start, end = one_window
    with pytest.raises(ValueError, match="features' shape"):
        postprocess_predictions(examples, features, start[:, :10], end)
    with pytest.raises(ValueError, match="class_logits has shape"):
        postprocess_predictions(examples, features, start, end, class_logits=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="n_best_size"):
        postprocess_predictions(examples, features, start, end, n_best_size=0)
    with pytest.raises(ValueError, match="only 0 examples"):
        postprocess_predictions([], features, start, end)
