"""Traditional → simplified Chinese for the model, keeping every character offset valid.

DRCD is written in traditional Chinese while the Chinese BERT checkpoints were pre-trained mostly
on simplified text, so the model reads a simplified copy of each passage and question. Answers must
still be returned (and scored) in the original traditional text, so the copy has to be aligned
character for character with the original: character i of the copy stands for character i of the
original, and an answer's character offsets in the copy slice the original directly.

OpenCC converts phrase by phrase and a phrase may convert to a different number of characters (the
`tw2sp` configuration turns 網際網路 into 互联网). The length of every converted text is therefore
checked; when it changed, the text is converted again one character at a time, keeping the original
character wherever the single-character conversion is not exactly one character. (OpenCC 1.4.2's
`t2s` dictionaries contain no length-changing entry, so with `t2s` the whole-text conversion, with
its phrase-level choices such as 計畫 → 计划, is always kept; the check guards other configurations
and other dictionary versions.)
"""
from __future__ import annotations

import opencc


class TraditionalToSimplified:
    """A length-preserving OpenCC converter: `convert(text)` returns a string of `len(text)`."""

    def __init__(self, config: str = "t2s"):
        self.config = config
        self._opencc = opencc.OpenCC(config)
        self._character_cache: dict[str, str] = {}

    def convert(self, text: str) -> tuple[str, bool]:
        """(converted text of the same length, whether the character-by-character fallback was used)."""
        converted = self._opencc.convert(text)
        if len(converted) == len(text):
            return converted, False
        return "".join(self._convert_character(ch) for ch in text), True

    def _convert_character(self, ch: str) -> str:
        if ch not in self._character_cache:
            converted = self._opencc.convert(ch)
            self._character_cache[ch] = converted if len(converted) == 1 else ch
        return self._character_cache[ch]

    def __repr__(self):
        return f"TraditionalToSimplified({self.config!r})"
