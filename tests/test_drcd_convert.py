"""DRCD: traditional → simplified for the model with a character-exact map back to the original."""
import json

import opencc
import pytest

from cnbert.data import TraditionalToSimplified, read_drcd
from conftest import FIXTURES, data_file


def per_character(converter, text):
    return "".join(converter._convert_character(ch) for ch in text)


def test_t2s_keeps_phrase_level_choices_when_the_length_is_unchanged():
    converter = TraditionalToSimplified()
    assert converter.convert("都市計畫") == ("都市计划", False)
    # Character by character, 畫 would become 画: the phrase-level result is kept when it is safe.
    assert per_character(converter, "都市計畫") == "都市计画"


def test_a_real_length_changing_phrase_falls_back_to_per_character_conversion():
    text = "我用網際網路看計程車"
    # OpenCC's Taiwan-phrase configuration rewrites 網際網路 (4 characters) as 互联网 (3).
    assert opencc.OpenCC("tw2sp").convert(text) == "我用互联网看出租车"
    converted, fell_back = TraditionalToSimplified("tw2sp").convert(text)
    assert (converted, fell_back) == ("我用网际网路看计程车", True)
    assert len(converted) == len(text)


def test_a_shrinking_and_a_growing_phrase_of_equal_total_length_fall_back_too():
    text = "肯亞的網際網路"
    # 肯亞 -> 肯尼亚 grows by one and 網際網路 -> 互联网 shrinks by one: same length, but 的 moves.
    whole = opencc.OpenCC("tw2sp").convert(text)
    assert whole == "肯尼亚的互联网" and whole.index("的") != text.index("的")
    converted, fell_back = TraditionalToSimplified("tw2sp").convert(text)
    assert (converted, fell_back) == ("肯亚的网际网路", True)
    assert converted.index("的") == text.index("的")


class _StubOpenCC:
    """Maps whole texts as a table says, else character by character; a character mapped to two
    characters stands for a dictionary entry that changes length."""

    def __init__(self, characters):
        self.characters = characters

    def convert(self, text):
        return "".join(self.characters.get(ch, ch) for ch in text)


def test_fallback_keeps_a_character_whose_conversion_is_not_one_character(monkeypatch):
    converter = TraditionalToSimplified()
    monkeypatch.setattr(converter, "_opencc", _StubOpenCC({"國": "国", "㐀": "AB"}))
    assert converter.convert("中國㐀字") == ("中国㐀字", True)
    assert converter.convert("中國") == ("中国", False)


class _PhraseStubOpenCC:
    """Replaces phrases as a table says (longest first), like OpenCC's phrase dictionaries."""

    def __init__(self, phrases):
        self.phrases = sorted(phrases.items(), key=lambda item: -len(item[0]))

    def convert(self, text):
        for phrase, replacement in self.phrases:
            text = text.replace(phrase, replacement)
        return text


def test_adjacent_shrinking_and_growing_phrases_in_one_replaced_run_fall_back(monkeypatch):
    # 甲乙 -> 丙 shrinks and 丁 -> 戊己 grows, side by side: 甲乙丁 -> 丙戊己 has the right length and
    # is one same-length replacement, yet 丁's place now holds 己 (half of 丁's conversion).
    converter = TraditionalToSimplified()
    monkeypatch.setattr(converter, "_opencc", _PhraseStubOpenCC({"甲乙": "丙", "丁": "戊己", "計畫": "计划"}))
    assert converter.convert("說甲乙丁了") == ("說甲乙丁了", True)
    # a same-length phrase in the same text converts whole when nothing hides a length change
    assert converter.convert("說計畫了") == ("說计划了", False)


def test_a_coincidentally_aligned_character_does_not_hide_a_length_change(monkeypatch):
    # 甲乙 -> 丙 shrinks and 丁 -> 乙戊 grows: 甲乙丁己 -> 丙乙戊己. The diff against the per-character
    # text lines the new 乙 (half of 丁's conversion) up with the original 乙, leaving two
    # one-character runs, 甲 -> 丙 and 丁 -> 戊, that no split check can see; yet an answer 丁己
    # would be read as 戊己.
    converter = TraditionalToSimplified()
    monkeypatch.setattr(converter, "_opencc", _PhraseStubOpenCC({"甲乙": "丙", "丁": "乙戊"}))
    assert converter._opencc.convert("甲乙丁己") == "丙乙戊己"
    assert converter.convert("甲乙丁己") == ("甲乙丁己", True)
    assert converter.convert("子甲乙丁") == ("子甲乙丁", True)


def test_read_drcd_fixture_keeps_answers_in_traditional_text():
    examples, report = read_drcd(FIXTURES / "mrc_drcd_sample.json")
    assert report.questions == 6 and report.conversion_fallbacks == 0
    by_id = {e.qas_id: e for e in examples}
    example = by_id["1156-2-2"]
    answer = example.training_answer
    assert example.context_text[answer.answer_start:answer.answer_end] == answer.text == "都市計畫"
    assert example.model_context[answer.answer_start:answer.answer_end] == "都市计划"
    assert example.question_text == "城市設計與什麼領域擁有許多相似之處？"
    assert example.model_question == "城市设计与什么领域拥有许多相似之处？"
    for example in examples:
        assert len(example.model_context) == len(example.context_text)
        assert example.model_context != example.context_text


def test_read_drcd_with_a_length_changing_converter(tmp_path):
    context = "臺灣的網際網路普及率很高，計程車也很多。"
    answer_start = context.index("計程車")
    path = tmp_path / "drcd.json"
    path.write_text(json.dumps({"version": "1.3", "data": [{"title": "網路", "id": "1", "paragraphs": [{
        "id": "1-1", "context": context, "qas": [
            {"id": "1-1-1", "question": "什麼很多？", "answers": [{"id": "1", "text": "計程車", "answer_start": answer_start}]},
            {"id": "1-1-2", "question": "網際網路的普及率如何？", "answers": [{"id": "1", "text": "很高", "answer_start": 10}]},
        ]}]}]}, ensure_ascii=False), encoding="utf-8")
    examples, report = read_drcd(path, TraditionalToSimplified("tw2sp"))
    # The passage and the second question contain 網際網路: both fell back.
    assert report.conversion_fallbacks == 2
    first, second = examples
    assert first.model_context == "台湾的网际网路普及率很高，计程车也很多。"
    assert first.model_context[answer_start:answer_start + 3] == "计程车"
    assert first.context_text[answer_start:answer_start + 3] == "計程車"
    assert second.model_question == "网际网路的普及率如何？"
    assert first.model_question == "什么很多？"


@pytest.mark.data
def test_drcd_dev_conversion_keeps_every_answer_aligned():
    examples, report = read_drcd(data_file("drcd/DRCD_dev.json"))
    converter = TraditionalToSimplified()
    t2s = opencc.OpenCC("t2s")
    assert report.conversion_fallbacks == 0  # REFERENCE.md: t2s keeps every DRCD dev length
    passages = {e.context_text: e.model_context for e in examples}
    assert len(passages) == 1000
    assert all(len(original) == len(model) for original, model in passages.items())
    answers = 0
    for example in examples:
        for answer in example.answers:
            answers += 1
            assert example.context_text[answer.answer_start:answer.answer_end] == answer.text
            assert example.model_context[answer.answer_start:answer.answer_end] == t2s.convert(answer.text)
    assert answers == 7048
    # Measured: in 112 passage positions the phrase-level conversion chose differently from the
    # character-level one (計畫 → 计划 rather than 计画, 藉此 → 借此...), and the alignment held.
    phrase_choices = sum(model_ch != converter._convert_character(original_ch)
                         for original, model in passages.items() for original_ch, model_ch in zip(original, model))
    assert phrase_choices == 112
