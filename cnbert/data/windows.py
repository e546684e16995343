"""Sliding windows over a sequence longer than a model takes, and which window sees each token
best (google-research/bert run_squad.py's doc_stride windows and `_check_is_max_context`). Reading
comprehension windows passages with them; NER windows long sentences."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def doc_windows(num_tokens: int, window_size: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of run_squad's sliding windows over `num_tokens` tokens: each window holds up
    to `window_size` tokens, the next starts `doc_stride` tokens later, the last ends at the last token."""
    windows = []
    start = 0
    while start < num_tokens:
        length = min(num_tokens - start, window_size)
        windows.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return windows


def max_context_window(num_tokens: int, windows: Sequence[tuple[int, int]]) -> np.ndarray:
    """[num_tokens] index of the window in which each token has the most context: the largest
    min(tokens to its left, tokens to its right) + 0.01 * window length, the first window on a tie."""
    positions = np.arange(num_tokens)
    best_score = np.full(num_tokens, -np.inf)
    best_window = np.zeros(num_tokens, dtype=np.int64)
    for index, (start, length) in enumerate(windows):
        inside = positions[start:start + length]
        score = np.minimum(inside - start, start + length - 1 - inside) + 0.01 * length
        better = score > best_score[start:start + length]
        best_score[start:start + length][better] = score[better]
        best_window[start:start + length][better] = index
    return best_window
