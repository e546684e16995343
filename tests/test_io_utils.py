"""Atomic writes: an interrupted write leaves the previous file or directory (or nothing), never a
partial one."""
import json
import os

import pytest

from cnbert.errors import DataError
from cnbert import io_utils
from cnbert.io_utils import atomic_directory, atomic_open, read_json_file, write_json


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"F1": 1.0})
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as f:
            f.write('{"F1": 2.')
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"F1": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def write_model_directory(target, weights):
    with atomic_directory(target) as staging:
        assert staging.parent == target.parent and staging.name.startswith(f".{target.name}.tmp-")
        assert not any(staging.iterdir())
        (staging / "model.bin").write_text(weights)
        (staging / "vocab.txt").write_text("[PAD]")


def test_atomic_directory_creates_and_replaces_a_directory_without_leftovers(tmp_path):
    target = tmp_path / "runs" / "best"
    write_model_directory(target, "v1")  # creates the parent
    write_model_directory(target, "v2")
    assert sorted(p.name for p in target.iterdir()) == ["model.bin", "vocab.txt"]
    assert (target / "model.bin").read_text() == "v2"
    assert [p.name for p in target.parent.iterdir()] == ["best"]


def test_atomic_directory_flushes_every_file_to_disk_before_publishing_it(tmp_path, monkeypatch):
    """A library writing into the staging directory (safetensors' save_file) does not fsync: the
    rename must not publish files whose data a power loss would lose."""
    synced, real_fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(io_utils.os, "fsync", recording_fsync)
    with io_utils.atomic_directory(tmp_path / "model") as staging:
        (staging / "model.safetensors").write_bytes(b"weights")
        (staging / "sub").mkdir()
        (staging / "sub" / "config.json").write_text("{}")
        staged = str(staging)
    assert sorted(synced) == [f"{staged}/model.safetensors", f"{staged}/sub/config.json"]


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_failure_inside_atomic_directory_keeps_the_old_directory_and_removes_the_staging_one(tmp_path, interruption):
    target = tmp_path / "best"
    write_model_directory(target, "v1")
    with pytest.raises(interruption):
        with atomic_directory(target) as staging:
            (staging / "model.bin").write_text("half of v2")
            raise interruption
    assert (target / "model.bin").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["best"]
    with pytest.raises(ValueError):
        with atomic_directory(tmp_path / "new"):
            raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_atomic_directory_refuses_to_replace_a_file(tmp_path):
    target = tmp_path / "best"
    target.write_text("not a directory")
    with pytest.raises(FileExistsError, match="best exists and is not a directory"):
        write_model_directory(target, "v1")
    assert target.read_text() == "not a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_replace_directory_puts_the_old_directory_back_when_the_final_rename_fails(tmp_path, monkeypatch):
    target, new = tmp_path / "best", tmp_path / "staged"
    write_model_directory(target, "v1")
    write_model_directory(new, "v2")
    real_replace = os.replace

    def fail_on_the_new_directory(src, dst):
        if os.fspath(src) == os.fspath(new):
            raise OSError("disk unplugged")
        real_replace(src, dst)

    monkeypatch.setattr(io_utils.os, "replace", fail_on_the_new_directory)
    with pytest.raises(OSError, match="disk unplugged"):
        io_utils.replace_directory(new, target)
    assert (target / "model.bin").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "staged"]


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
    with pytest.raises(DataError, match=r"twice.json: key 'q1': appears twice in one JSON object"):
        read_json_file(twice)
    with pytest.raises(DataError, match=r"twice.json: id 'q1': appears twice"):
        read_json_file(twice, key_name="id")
    nested = tmp_path / "nested.json"
    nested.write_text('{"data": [{"context": "a", "qas": [], "context": "b"}]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"nested.json: key 'context': appears twice"):
        read_json_file(nested)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(DataError, match=r"deep.json: malformed JSON: nested too deeply to read"):
        read_json_file(deep)
    long_number = tmp_path / "long.json"
    long_number.write_text('{"answer_start": ' + "1" * 5000 + "}", encoding="utf-8")
    with pytest.raises(DataError, match=r"long.json: malformed JSON: Exceeds the limit \(4300 digits\)"):
        read_json_file(long_number)


def test_outputs_get_the_usual_permissions_not_temporary_file_ones(tmp_path):
    import os
    import stat

    from cnbert.io_utils import atomic_directory

    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {})
        with atomic_directory(tmp_path / "model") as staging:
            (staging / "weights.bin").write_bytes(b"0")
            os.chmod(staging / "weights.bin", 0o600)
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "weights.bin").stat().st_mode) == 0o644


def write_set(directory, version):
    write_model_directory(directory / "best_model", version)
    write_json(directory / "predictions.json", {"q": version})
    write_json(directory / "eval_results.json", {"version": version})


def read_set(directory):
    return ((directory / "best_model" / "model.bin").read_text(), read_json_file(directory / "predictions.json")["q"],
            read_json_file(directory / "eval_results.json")["version"])


def test_replaced_together_replaces_a_whole_set_and_keeps_other_files(tmp_path):
    write_set(tmp_path, "v1")
    (tmp_path / "tensorboard").mkdir()
    with io_utils.replaced_together(tmp_path) as staging:
        write_set(staging, "v2")
    assert read_set(tmp_path) == ("v2", "v2", "v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model", "eval_results.json", "predictions.json",
                                                          "tensorboard"]


def test_replaced_together_deletes_the_members_of_the_earlier_set_not_written_again(tmp_path):
    for name in ("predictions.json", "test_results.json", "notes.txt"):
        (tmp_path / name).write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with io_utils.replaced_together(tmp_path, members=("predictions.json", "test_results.json")) as staging:
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "predictions.json", "test_results.json"]
    with io_utils.replaced_together(tmp_path, members=("predictions.json", "test_results.json", "absent")) as staging:
        (staging / "predictions.json").write_text("v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "predictions.json"]
    assert (tmp_path / "predictions.json").read_text() == "v2"


def test_a_failure_while_staging_leaves_the_earlier_set(tmp_path):
    write_set(tmp_path, "v1")
    with pytest.raises(KeyboardInterrupt):
        with io_utils.replaced_together(tmp_path) as staging:
            write_model_directory(staging / "best_model", "v2")
            raise KeyboardInterrupt
    assert read_set(tmp_path) == ("v1", "v1", "v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model", "eval_results.json", "predictions.json"]


def test_ctrl_c_during_the_renames_takes_effect_once_the_whole_set_is_in_place(tmp_path, monkeypatch):
    import signal

    write_set(tmp_path, "v1")
    real_replace, renames = os.replace, []

    def interrupted_replace(src, dst):  # Ctrl-C arrives right after the first rename
        real_replace(src, dst)
        renames.append(dst)
        if len(renames) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        with io_utils.replaced_together(tmp_path) as staging:
            write_set(staging, "v2")
            monkeypatch.setattr(io_utils.os, "replace", interrupted_replace)  # from the renames into place on
    assert read_set(tmp_path) == ("v2", "v2", "v2")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SIGTERM_DURING_RENAMES = """
import os, signal, sys
from pathlib import Path
from cnbert import io_utils

directory = Path(sys.argv[1])
real_replace, renames = os.replace, []


def terminated_replace(src, dst):  # SIGTERM arrives right after the first rename
    real_replace(src, dst)
    renames.append(dst)
    if len(renames) == 1:
        os.kill(os.getpid(), signal.SIGTERM)


with io_utils.replaced_together(directory) as staging:
    (staging / "a.json").write_text("v2")
    (staging / "b.json").write_text("v2")
    io_utils.os.replace = terminated_replace
"""


def test_sigterm_during_the_renames_ends_the_process_with_the_set_in_place_and_nothing_left(tmp_path):
    """SIGTERM's default action ends the process at once, running no cleanup: the staging directory
    must be gone before the held signal is let through."""
    import subprocess
    import sys

    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text("v1")
    script = tmp_path.parent / f"{tmp_path.name}_sigterm.py"
    script.write_text(SIGTERM_DURING_RENAMES)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -15, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no .staged-* left
    assert [(tmp_path / name).read_text() for name in ("a.json", "b.json")] == ["v2", "v2"]
