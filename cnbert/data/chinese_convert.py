"""Traditional → simplified Chinese for the model, keeping every character offset valid.

DRCD is written in traditional Chinese while the Chinese BERT checkpoints were pre-trained mostly
on simplified text, so the model reads a simplified copy of each passage and question. Answers must
still be returned (and scored) in the original traditional text, so the copy has to be aligned
character for character with the original: character i of the copy stands for character i of the
original, and an answer's character offsets in the copy slice the original directly.

OpenCC converts phrase by phrase and a phrase may convert to a different number of characters (the
`tw2sp` configuration turns 網際網路 into 互联网 and 肯亞 into 肯尼亚). So every converted text is
compared with the text converted one character at a time (keeping the original character wherever
a single character does not convert to exactly one): the whole-text conversion is kept only where
the two differ by same-length replacements alone, the phrase-level choices such as 計畫 → 计划,
and nothing hides a length change: split inside or at the edge of a replaced run, the text
converts to its own length on either side (OpenCC turning 甲乙 into one character and 丁 into two
would replace 甲乙丁 by three characters, yet 丁 would no longer stand at 丁's place). Otherwise
the character-by-character conversion is used. Comparing lengths alone would not do: a phrase
that shrinks and another that grows leave the length unchanged and shift every character between
them. Splits inside the runs alone would not do either: the diff can line a character up with its
namesake by coincidence (甲乙 → 丙 beside 丁 → 乙戊 turns 甲乙丁己 into 丙乙戊己, whose 乙 is half
of 丁's conversion), leaving runs of one character, 甲 and 丁, with no split inside them.
(OpenCC 1.4.2's `t2s` dictionaries contain no length-changing entry, so with `t2s` the whole-text
conversion is always kept; the checks guard other configurations and other dictionary versions.)
"""
from __future__ import annotations

import difflib


class TraditionalToSimplified:
    """A length-preserving OpenCC converter: `convert(text)` returns a string of `len(text)`."""

    def __init__(self, config: str = "t2s"):
        # imported here, not with the module: only DRCD needs OpenCC, and importing cnbert (its
        # models, say, on a machine set up for a benchmark) must not require it
        import opencc

        self.config = config
        self._opencc = opencc.OpenCC(config)
        self._character_cache: dict[str, str] = {}

    def convert(self, text: str) -> tuple[str, bool]:
        """(converted text of the same length, whether the character-by-character fallback was used)."""
        converted = self._opencc.convert(text)
        by_character = "".join(self._convert_character(ch) for ch in text)
        if converted == by_character:
            return converted, False
        runs = _same_length_replacements(by_character, converted)
        if runs is not None and all(self._keeps_length_when_split(text, split)
                                    for start, end in runs for split in range(start, end + 1)):
            return converted, False
        return by_character, True

    def _keeps_length_when_split(self, text: str, split: int) -> bool:
        """Whether both sides of `text` split at `split` convert to their own length. A shrinking
        phrase beside a growing one fails at the split between them."""
        return (len(self._opencc.convert(text[:split])) == split
                and len(self._opencc.convert(text[split:])) == len(text) - split)

    def _convert_character(self, ch: str) -> str:
        if ch not in self._character_cache:
            converted = self._opencc.convert(ch)
            self._character_cache[ch] = converted if len(converted) == 1 else ch
        return self._character_cache[ch]

    def __repr__(self):
        return f"TraditionalToSimplified({self.config!r})"


def _same_length_replacements(a: str, b: str) -> list[tuple[int, int]] | None:
    """The replaced runs [start, end) when b is a with some runs of characters replaced by runs of
    the same length (so that character i of b stands at character i of a); None otherwise."""
    if len(a) != len(b):
        return None
    runs = []
    for tag, a_start, a_end, b_start, b_end in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag != "replace" or (a_start, a_end) != (b_start, b_end):
            return None
        runs.append((a_start, a_end))
    return runs
