"""Label conventions every framework's heads and losses share."""
from __future__ import annotations

import numpy as np

# A label no loss reads: the tags of [CLS], [SEP] and padding; the answer class of a window that
# misses its question's span; transformers' and torch's cross-entropy default.
IGNORE_INDEX = -100


def check_labels(name: str, values, num_classes: int) -> None:
    """Raise ValueError unless every value is in [0, num_classes) or IGNORE_INDEX; the message names
    the first bad values and where they are (rows, or (row, token) of per-token tags)."""
    values = np.asarray(values)
    bad = (values != IGNORE_INDEX) & ((values < 0) | (values >= num_classes))
    if bad.any():
        where = [tuple(int(i) for i in place) if values.ndim > 1 else int(place[0]) for place in np.argwhere(bad)[:10]]
        raise ValueError(f"{name} holds {values[bad][:10].tolist()} ({'rows' if values.ndim == 1 else '(row, token)'} "
                         f"{where}); values must be in [0, {num_classes}) or {IGNORE_INDEX} (ignored)")
