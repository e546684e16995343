"""Shared fixtures. Real data sets come from CNBERT_DATA (CI sets it and CNBERT_REQUIRE_DATA=1,
so a missing file fails there instead of skipping)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def data_file(relative):
    """Path of a real data file under CNBERT_DATA; skip (or fail in CI) when it is missing."""
    root = os.environ.get("CNBERT_DATA")
    required = os.environ.get("CNBERT_REQUIRE_DATA") == "1"
    if not root:
        reason = "CNBERT_DATA is not set: point it at the shared data folder to run the real-data tests"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    path = Path(root) / relative
    if not path.exists():
        reason = f"{path} is missing (CNBERT_DATA={root})"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    return path
