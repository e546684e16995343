"""Atomic writes: an interrupted write leaves the previous file (or nothing), never a partial one."""
import json

import pytest

from cnbert.errors import DataError
from cnbert.io_utils import atomic_open, read_json_file, write_json


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"F1": 1.0})
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as f:
            f.write('{"F1": 2.')
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"F1": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_write_json_keeps_chinese_readable_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "predictions.json"
    write_json(target, {"q1": "北京"})
    assert "北京" in target.read_text(encoding="utf-8")
    assert read_json_file(target) == {"q1": "北京"}


def test_read_json_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json: line 2 column 7: malformed JSON"):
        read_json_file(bad)
    twice = tmp_path / "twice.json"
    twice.write_text('{"q1": "a", "q1": "b"}', encoding="utf-8")
    assert read_json_file(twice) == {"q1": "b"}
    with pytest.raises(DataError, match=r"twice.json: id 'q1': appears twice"):
        read_json_file(twice, reject_duplicate_keys=True)
