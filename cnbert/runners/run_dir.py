"""What a training run writes in --output_dir, and reading it back to continue an interrupted run
(--resume): the earlier run's flags must be this run's, and each seed it finished is kept."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

from cnbert.errors import DataError
from cnbert.io_utils import read_json_file, read_text_file

FLAGS = flags.FLAGS
FLAGS_FILE = "flags.txt"  # the run's flags, as a flag file that reproduces it
HISTORY_FILE = "training_history.json"  # in seed_<seed>/, written when the seed's training has ended
EVAL_RESULTS_FILE = "eval_results.json"  # in seed_<seed>/: the best dev evaluation's scores
BEST_MODEL_DIR = "best_model"  # in seed_<seed>/
TEST_DIR = "test"  # the test file's predictions and TEST_RESULTS_FILE
TEST_RESULTS_FILE = "test_results.json"
REPORT_FILES = ("report.md", "report.json")
# The gold answers of a dev split cut from the training file (cnbert-mrc --cjrc_dev_fraction), which
# no file the user has holds: what the run's dev predictions are scored against.
DEV_GOLD_FILE = "dev_gold.json"

# Flags a continued run may change: they change neither what a seed learns nor what it is scored on
# (the run's folder may have been moved; a flags.txt written before NOT_RECORDED holds
# --overwrite_output_dir). --seeds may add seeds after the run's own (resume_seeds).
MAY_DIFFER_ON_RESUME = ("overwrite_output_dir", "output_dir", "seeds", "progress")
# Flags the run file does not hold: they say how to treat the folder, not what the run is
NOT_RECORDED = ("resume", "overwrite_output_dir")


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed_{seed}"


def resume_seeds(out: Path, flags_now: str, seeds: Sequence[int], path_flags: Sequence[str]) -> list[int]:
    """--resume: --output_dir holds a run (its FLAGS_FILE) whose flags are `flags_now` (a flag file,
    as effective_flags writes it) but for MAY_DIFFER_ON_RESUME, and whose seeds begin `seeds`;
    return the run's seeds. A flag the run's file lacks (a cnbert older than the flag) counts as
    its default; `path_flags` are compared as the paths they name from here. UsageError naming
    each difference."""
    path = out / FLAGS_FILE
    if not path.is_file():
        raise app.UsageError(f"--resume: {path} not found; --output_dir must hold the training run to continue")
    earlier, now = _flag_lines(read_text_file(path, "flags file")), _flag_lines(flags_now)

    def same(name: str) -> bool:
        if name not in earlier and name in FLAGS and FLAGS[name].value == FLAGS[name].default:
            return True
        if name in path_flags and name in earlier and name in now:
            return _resolved(earlier[name]) == _resolved(now[name])
        return earlier.get(name) == now.get(name)

    differences = [f"{earlier.get(name, f'--{name} not given')} there, {now.get(name, 'not given')} now"
                   for name in sorted(set(earlier) | set(now)) if name not in MAY_DIFFER_ON_RESUME and not same(name)]
    if differences:
        raise app.UsageError(f"--resume: the run in {out} had other flags ({FLAGS_FILE}): " + "; ".join(differences)
                             + ". Continue it with its flags, or start a new run")
    run_seeds = [int(seed) for seed in earlier.get("seeds", "--seeds=").split("=", 1)[1].split(",") if seed]
    if list(seeds[:len(run_seeds)]) != run_seeds:
        raise app.UsageError(f"--resume: the run in {out} trained --seeds={','.join(map(str, run_seeds))}; "
                             f"--seeds={','.join(map(str, seeds))} must start with them (seeds may be added after)")
    return run_seeds


def _resolved(line: str) -> Path:
    return Path(line.split("=", 1)[1]).resolve()


def _flag_lines(text: str) -> dict[str, str]:
    """{flag name: its line} of a flag file; a boolean's line is --name or --noname."""
    lines = {}
    for line in text.splitlines():
        if not line.startswith("--"):
            continue  # the comment that dates the file
        name = line[2:].split("=", 1)[0]
        if name not in FLAGS and name.startswith("no") and name[2:] in FLAGS:
            name = name[2:]
        lines[name] = line
    return lines


@dataclasses.dataclass
class EarlierSeeds:
    """The seeds an earlier run finished: each one's best dev scores, or why it stopped, and for
    each finished one what its history records of how it was made (the environment that trained
    it, the digests of its examples; None from a cnbert that did not record them)."""

    finished: dict[int, dict]
    stopped: dict[int, str]
    environments: dict[int, dict | None] = dataclasses.field(default_factory=dict)
    data: dict[int, dict | None] = dataclasses.field(default_factory=dict)


ENVIRONMENT_KEYS = ("cnbert", "framework", "device", "replicas")  # what a history's "environment" holds


def earlier_seeds(out: Path, seeds: Sequence[int], metric_names: Sequence[str]) -> EarlierSeeds:
    """Which of `seeds` (the run's own: resume_seeds) the run in `out` finished. A seed has finished
    once its HISTORY_FILE is written (after its last evaluation); one without it was interrupted
    and is trained again."""
    earlier = EarlierSeeds({}, {})
    for seed in seeds:
        directory = seed_dir(out, seed)
        if not (directory / HISTORY_FILE).is_file():
            continue
        history = read_json_file(directory / HISTORY_FILE)
        if not isinstance(history, dict):
            raise DataError(directory / HISTORY_FILE, None, "expected a JSON object (a training history)")
        if "stopped" in history:
            earlier.stopped[seed] = str(history["stopped"])
            continue
        results = directory / EVAL_RESULTS_FILE
        if not results.is_file() or not (directory / BEST_MODEL_DIR).is_dir():
            raise DataError(directory, None, f"{HISTORY_FILE} says seed {seed} finished, but {EVAL_RESULTS_FILE} or "
                            f"{BEST_MODEL_DIR}/ is missing; delete {directory} to train that seed again")
        metrics = read_json_file(results)
        missing = [name for name in metric_names if not isinstance(metrics, dict) or name not in metrics]
        if missing:
            raise DataError(results, None, f"has no {', '.join(missing)}: not this task's scores")
        _recorded(metrics, "unseen", ("examples", metric_names[0]), results)  # scores the report averages
        earlier.finished[seed] = metrics
        earlier.environments[seed] = _recorded(history, "environment", ENVIRONMENT_KEYS, directory / HISTORY_FILE)
        earlier.data[seed] = _recorded(history, "data", ("train", "dev"), directory / HISTORY_FILE)
    return earlier


def _recorded(record: dict, name: str, keys: Sequence[str], path: Path) -> dict | None:
    """record[name] (of the file at `path` in a seed's folder), an object holding `keys`; None when
    the record has none (an older cnbert)."""
    value = record.get(name)
    if value is not None and not (isinstance(value, dict) and all(key in value for key in keys)):
        raise DataError(path, None, f'"{name}" must be an object with {", ".join(keys)}, got {value!r}; delete '
                        f"{path.parent} to train that seed again")
    return value
