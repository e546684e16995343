"""Reading back an interrupted training run's folder for --resume: which seeds it finished or
stopped, and its flags against this run's."""
import json

import pytest
from absl import app

from cnbert.errors import DataError
from cnbert.runners.common import FLAGS  # defines the shared flags the comparison looks up
from cnbert.runners.run_dir import earlier_seeds, resume_seeds


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
    environment = {"cnbert": "0.1.0", "framework": "torch 2.13.0", "device": "CPU", "replicas": 1}
    data = {"train": "1" * 64, "dev": "2" * 64}
    seed_folder(tmp_path, 1, history={"environment": environment, "data": data, "evaluations": [], "losses": []},
                results={"accuracy": 91.5})
    seed_folder(tmp_path, 2, history={"losses": [], "stopped": "the loss was nan for 5 steps"})
    seed_folder(tmp_path, 3, results={"accuracy": 90.0})  # interrupted: a best model, no history yet
    seed_folder(tmp_path, 5, history={"evaluations": [], "losses": []}, results={"accuracy": 89.0})  # older cnbert
    earlier = earlier_seeds(tmp_path, [1, 2, 3, 4, 5], ["accuracy"])
    assert earlier.finished == {1: {"accuracy": 91.5}, 5: {"accuracy": 89.0}}
    assert earlier.stopped == {2: "the loss was nan for 5 steps"}
    assert earlier.environments == {1: environment, 5: None} and earlier.data == {1: data, 5: None}
    assert earlier_seeds(tmp_path, [3, 4], ["accuracy"]).finished == {}  # only the seeds asked for


def test_earlier_seeds_refuses_a_damaged_or_foreign_seed_folder(tmp_path):
    directory = seed_folder(tmp_path, 1, history={"losses": []}, results={"accuracy": 91.5}, model=False)
    with pytest.raises(DataError, match=fr"{directory}: training_history.json says seed 1 finished, but "
                                        r"eval_results.json or best_model/ is missing; delete .* to train that seed"):
        earlier_seeds(tmp_path, [1], ["accuracy"])
    (directory / "best_model").mkdir()
    with pytest.raises(DataError, match=r"eval_results.json: has no F1, EM: not this task's scores"):
        earlier_seeds(tmp_path, [1], ["F1", "EM"])
    (directory / "eval_results.json").write_text(json.dumps({"accuracy": 91.5, "unseen": {"examples": 862}}))
    with pytest.raises(DataError, match=r'eval_results.json: "unseen" must be an object with examples, accuracy, '
                                        r"got \{'examples': 862\}; delete .* to train that seed again"):
        earlier_seeds(tmp_path, [1], ["accuracy"])
    (directory / "eval_results.json").write_text(json.dumps({"accuracy": 91.5, "unseen": {"examples": 8,
                                                                                          "accuracy": 90.0}}))
    assert earlier_seeds(tmp_path, [1], ["accuracy"]).finished[1]["unseen"] == {"examples": 8, "accuracy": 90.0}
    (directory / "training_history.json").write_text(json.dumps({"environment": {"device": "CPU"}}))
    with pytest.raises(DataError, match=r'"environment" must be an object with cnbert, framework, device, replicas, '
                                        r"got \{'device': 'CPU'\}; delete .* to train that seed again"):
        earlier_seeds(tmp_path, [1], ["accuracy"])
    (directory / "training_history.json").write_text(json.dumps({"data": "abc"}))
    with pytest.raises(DataError, match=r'"data" must be an object with train, dev'):
        earlier_seeds(tmp_path, [1], ["accuracy"])
    (directory / "training_history.json").write_text("[]")
    with pytest.raises(DataError, match=r"training_history.json: expected a JSON object"):
        earlier_seeds(tmp_path, [1], ["accuracy"])


def test_resume_seeds_ignores_what_a_continued_run_may_change(tmp_path, monkeypatch):
    assert FLAGS["init_seed"].default == 0 and "progress" in FLAGS
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flags.txt").write_text("# cnbert-classify flags, 2026-11-27 10:00:00\n--do_lower_case\n"
                                        "--learning_rate=3e-05\n--output_dir=/old/place\n--seeds=1,2\n--progress\n"
                                        "--train_file=data/train.tsv\n")
    now = ("# cnbert-classify flags, 2026-11-28 09:00:00\n--do_lower_case\n--learning_rate=3e-05\n"
           "--output_dir=/new/place\n--seeds=1,2,3\n--noprogress\n--train_file={}\n")
    # the same file named another way; seeds added after the run's own; a flag the run's (older)
    # file lacks, at its default (--init_seed=0)
    assert resume_seeds(tmp_path, now.format(tmp_path / "data" / "train.tsv") + "--init_seed=0\n", [1, 2, 3],
                        ["train_file", "output_dir"]) == [1, 2]
    with pytest.raises(app.UsageError, match=r"--train_file=data/train.tsv there, --train_file=data/other.tsv now"):
        resume_seeds(tmp_path, now.format("data/other.tsv"), [1, 2, 3], ["train_file", "output_dir"])
    with pytest.raises(app.UsageError, match=r"trained --seeds=1,2; --seeds=2,1 must start with them"):
        resume_seeds(tmp_path, now.format("data/train.tsv"), [2, 1], ["train_file"])
    with pytest.raises(app.UsageError, match="--do_lower_case there, --nodo_lower_case now; "
                                             "--learning_rate=3e-05 there, not given now; "
                                             "--max_seq_length not given there, --max_seq_length=64 now"):
        resume_seeds(tmp_path, "--nodo_lower_case\n--max_seq_length=64\n--seeds=1,2\n", [1, 2], [])
