"""Reading JSON with errors that name the file, and atomic writes: a reader never sees a
half-written output, even after Ctrl-C."""
import contextlib
import json
import os
import tempfile
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
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
    # json.load keeps the last of two equal keys without a word; for predictions that would hide
    # which answer is scored, so refuse instead.
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def read_json_file(path, reject_duplicate_keys=False):
    """Parse a UTF-8 JSON file; any failure becomes a DataError naming the file (and the line)."""
    path = Path(path)
    hook = _reject_duplicate_keys if reject_duplicate_keys else None
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=hook)
    except OSError as e:
        raise DataError(path, None, f"cannot read the file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DataError(path, f"byte {e.start}", "not UTF-8 text") from e
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno} column {e.colno}", f"malformed JSON: {e.msg}") from e
    except _DuplicateKey as e:
        raise DataError(path, f"id {e.key!r}", "appears twice") from e
