"""CJRC's train / dev split of its one labelled file (--cjrc_dev_fraction): by passage, copies of a
passage on one side."""
import collections

import pytest

from cnbert.data import MrcAnswer, MrcExample, read_cjrc
from cnbert.tasks.mrc import passage_key, split_by_passage
from conftest import data_file


def examples_on(passages, per_passage=3):
    return [MrcExample(f"{p}_{q}", f"问题{q}？", context, (MrcAnswer("", None),))
            for p, context in enumerate(passages) for q in range(per_passage)]


def test_a_passage_and_its_copies_land_on_one_side():
    distinct = [f"第{i}号案件的事实与理由。" for i in range(20)]
    # the same text with HTML entities, or full-width letters and digits, is a copy, not a new passage
    copies = ["原告主张……被告辩称", "原告主张&hellip;&hellip;被告辩称", "&ldquo;ＡＢＣ１２３&rdquo;", "“ABC123”"]
    examples = examples_on(distinct + copies)
    assert passage_key(copies[0]) == passage_key(copies[1]) and passage_key(copies[2]) == passage_key(copies[3])
    sides_seen = set()
    for seed in range(30):
        train, dev = split_by_passage(examples, 0.25, seed=seed)
        assert sorted(e.qas_id for e in train + dev) == sorted(e.qas_id for e in examples)
        train_keys = {passage_key(e.context_text) for e in train}
        dev_keys = {passage_key(e.context_text) for e in dev}
        assert not train_keys & dev_keys
        # 22 passages once copies count once: a quarter of them, rounded, is held out
        assert len(dev_keys) == round(22 * 0.25)
        sides_seen.add(passage_key(copies[0]) in dev_keys)
    assert sides_seen == {True, False}  # the copies' side follows the seed, as any passage's does


def test_the_split_is_deterministic_and_refuses_one_passage():
    examples = examples_on(["甲案事实。", "乙案事实。", "丙案事实。"])
    assert split_by_passage(examples, 0.5, seed=4) == split_by_passage(examples, 0.5, seed=4)
    with pytest.raises(ValueError, match=r"1 passage\(s\), copies counted once: at least two are needed"):
        split_by_passage(examples_on(["同一段落……", "同一段落&hellip;&hellip;"]), 0.5)
    with pytest.raises(ValueError, match=r"dev_fraction must be in \(0, 1\), got 1"):
        split_by_passage(examples, 1)


@pytest.mark.data
def test_the_cjrc_file_holds_one_passage_twice_and_the_split_keeps_it_together():
    examples, _ = read_cjrc(data_file("cjrc/dev_ground_truth.json"))
    texts = list(dict.fromkeys(e.context_text for e in examples))
    by_key = collections.defaultdict(list)
    for text in texts:
        by_key[passage_key(text)].append(text)
    copied = [group for group in by_key.values() if len(group) > 1]
    # 999 distinct passage strings; one of them twice, once with &hellip; and once with …
    assert len(texts) == 999 and len(by_key) == 998 and len(copied) == 1
    assert {"&hellip;" in text for text in copied[0]} == {True, False}
    questions = [{e.qas_id for e in examples if e.context_text == text} for text in copied[0]]
    for seed in range(20):
        _, dev = split_by_passage(examples, 0.1, seed=seed)
        dev_ids = {e.qas_id for e in dev}
        assert len({bool(ids & dev_ids) for ids in questions}) == 1, f"seed {seed} split the copies"
        assert len({passage_key(e.context_text) for e in dev}) == round(998 * 0.1)
