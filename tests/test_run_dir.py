"""Reading back an interrupted training run's folder for --resume: which seeds it finished or
stopped, and its flags against this run's."""
import json

import pytest
from absl import app

from cnbert.errors import DataError
from cnbert.runners.run_dir import check_same_flags, earlier_seeds


def seed_folder(out, seed, history=None, results=None, model=True):
    directory = out / f"seed_{seed}"
    directory.mkdir(parents=True)
    if history is not None:
        (directory / "training_history.json").write_text(json.dumps(history))
    if results is not None:
        (directory / "eval_results.json").write_text(json.dumps(results))
    if model:
        (directory / "best_model").mkdir()
    return directory


def test_earlier_seeds_reads_finished_and_stopped_seeds_and_retrains_the_rest(tmp_path):
    seed_folder(tmp_path, 1, history={"evaluations": [], "losses": []}, results={"accuracy": 91.5})
    seed_folder(tmp_path, 2, history={"losses": [], "stopped": "the loss was nan for 5 steps"})
    seed_folder(tmp_path, 3, results={"accuracy": 90.0})  # interrupted: a best model, no history yet
    earlier = earlier_seeds(tmp_path, [1, 2, 3, 4], ["accuracy"])
    assert earlier.finished == {1: {"accuracy": 91.5}} and earlier.stopped == {2: "the loss was nan for 5 steps"}
    assert earlier_seeds(tmp_path, [3, 4], ["accuracy"]).finished == {}  # only the seeds asked for


def test_earlier_seeds_refuses_a_damaged_or_foreign_seed_folder(tmp_path):
    directory = seed_folder(tmp_path, 1, history={"losses": []}, results={"accuracy": 91.5}, model=False)
    with pytest.raises(DataError, match=fr"{directory}: training_history.json says seed 1 finished, but "
                                        r"eval_results.json or best_model/ is missing; delete .* to train that seed"):
        earlier_seeds(tmp_path, [1], ["accuracy"])
    (directory / "best_model").mkdir()
    with pytest.raises(DataError, match=r"eval_results.json: has no F1, EM: not this task's scores"):
        earlier_seeds(tmp_path, [1], ["F1", "EM"])
    (directory / "training_history.json").write_text("[]")
    with pytest.raises(DataError, match=r"training_history.json: expected a JSON object"):
        earlier_seeds(tmp_path, [1], ["accuracy"])


def test_check_same_flags_ignores_what_a_continued_run_may_change(tmp_path):
    (tmp_path / "flags.txt").write_text("# cnbert-classify flags, 2026-11-27 10:00:00\n--do_lower_case\n"
                                        "--learning_rate=3e-05\n--output_dir=/old/place\n--seeds=1,2\n--progress\n")
    check_same_flags(tmp_path, "# cnbert-classify flags, 2026-11-28 09:00:00\n--do_lower_case\n"
                               "--learning_rate=3e-05\n--output_dir=/new/place\n--seeds=1,2,3\n--noprogress\n")
    with pytest.raises(app.UsageError, match="--do_lower_case there, --nodo_lower_case now; "
                                             "--learning_rate=3e-05 there, not given now; "
                                             "--max_seq_length not given there, --max_seq_length=64 now"):
        check_same_flags(tmp_path, "--nodo_lower_case\n--max_seq_length=64\n--seeds=1,2\n")
