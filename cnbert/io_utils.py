"""Reading JSON with errors that name the file, and atomic writes of files and directories: a
reader never sees a half-written output, even after Ctrl-C."""
import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from cnbert.errors import DataError


@contextlib.contextmanager
def atomic_open(path, mode="w", encoding="utf-8"):
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(target) -> Iterator[Path]:
    """Yield an empty staging directory beside `target` to write into; when the block succeeds it
    becomes `target` (replace_directory). On any exception, Ctrl-C included, the staging directory
    is removed and `target` (old contents or absence) is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the final rename stays on one file system (os.replace is atomic only there).
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        _usual_permissions(staging)
        _sync_files(staging)
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def replaced_together(directory, members: Sequence[str] = ()) -> Iterator[Path]:
    """Yield an empty staging directory inside `directory` to write a set of outputs into (files
    and directories). When the block succeeds each entry replaces its namesake in `directory`,
    and each file of `members` (names the set may hold) that was not written is deleted there, by
    renames and deletions alone with Ctrl-C and SIGTERM held back until the last is done, so an
    interrupted run leaves the earlier set or the new one, never a mix of the two (only a hard
    kill during those renames could). On an exception the staging directory is removed and
    `directory` is left as it was."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staged-", dir=directory))
    try:
        yield staging
        entries = sorted(staging.iterdir())
        stale = [directory / name for name in members if not (staging / name).exists()]
        with _interrupts_held():
            for entry in entries:
                if entry.is_dir():
                    replace_directory(entry, directory / entry.name)
                else:
                    os.replace(entry, directory / entry.name)
            for path in stale:
                path.unlink(missing_ok=True)
            staging.rmdir()  # before a held SIGTERM ends the process, which runs no cleanup
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """SIGINT and SIGTERM arriving in the block take effect when it ends. Python runs signal
    handlers in the main thread only, so outside it nothing can be held back (nor raised)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {signum: signal.signal(signum, lambda received, frame: caught.append(received))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])


def _sync_files(directory: Path) -> None:
    """Flush every file under `directory` to disk (as atomic_open does its one file), so that after a
    power loss the rename that publishes the directory cannot point at files whose data was lost."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_permissions(directory: Path) -> None:
    """mkdtemp/mkstemp make private (0700/0600) entries; a saved model should be as readable as
    any other output, so apply the process umask as a plain mkdir/open would."""
    mask = _umask()
    os.chmod(directory, 0o777 & ~mask)
    for path in directory.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def replace_directory(new: Path, target: Path) -> None:
    """Move the complete directory `new` to `target` (same file system). An existing directory at
    `target` is moved aside first and deleted only once `new` is in place; if that rename fails the
    old one is put back. POSIX cannot swap two directories in one step, so there is a moment with
    no `target`, never one with a partial `target`."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    old = aside / target.name
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        aside.rmdir()
        raise
    shutil.rmtree(aside)


def write_json(path, obj, indent=2):
    """Write `obj` as UTF-8 JSON (Chinese kept readable) atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def write_text(path, text):
    with atomic_open(path) as f:
        f.write(text)


class _DuplicateKey(Exception):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _reject_duplicate_keys(pairs):
    # json.loads keeps the last of two equal keys without a word: a config value, a passage or a
    # scored answer would be silently replaced, so refuse instead.
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def read_text_file(path, what: str = "file") -> str:
    """A UTF-8 text file's content exactly as written: no newline translation (readers split on
    "\n" and drop a trailing "\r" themselves, so a lone "\r" inside a field stays text), without
    a leading byte-order mark. Any failure becomes a DataError naming the file (and, for bytes that
    are not UTF-8, the line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, f"{what} not found") from None
    except OSError as e:
        raise DataError(path, None, f"cannot read the {what} ({e.strerror or e})") from e
    return _decode_utf8(path, data, f"the {what} is not UTF-8 text")


def _decode_utf8(path: Path, data: bytes, message: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(path, f"line {line} (byte {e.start})", message) from e


def read_json_file(path, key_name: str = "key"):
    """Parse a UTF-8 JSON file; any failure becomes a DataError naming the file (and the line).
    An object with a key twice is refused; the error calls the key a `key_name` ("id" in a
    predictions file)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(path, None, f"cannot read the file ({e.strerror or e})") from e
    return parse_json_text(path, _decode_utf8(path, data, "not UTF-8 text"), key_name)


def parse_json_text(path, text: str, key_name: str = "key"):
    """json.loads(text) refusing duplicate keys; any failure becomes a DataError naming `path`
    (and the line)."""
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno} column {e.colno}", f"malformed JSON: {e.msg}") from e
    except _DuplicateKey as e:
        raise DataError(path, f"{key_name} {e.key!r}", "appears twice in one JSON object") from e
    except RecursionError as e:
        raise DataError(path, None, "malformed JSON: nested too deeply to read") from e
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise DataError(path, None, f"malformed JSON: {e}") from e
