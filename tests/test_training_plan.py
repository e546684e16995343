"""The batch plan and schedule shared by the PyTorch and TensorFlow trainers."""
import numpy as np
import pytest

from cnbert.report import format_markdown, summarize_seeds
from cnbert.training import (GROUP_BATCHES, TrainingConfig, TrainingRun, eval_shard, global_batches,
                             lr_multiplier, micro_batches, trim_padding)


def test_trim_padding_cuts_the_columns_every_row_masks_rounded_up_to_eight():
    mask = np.zeros((3, 40), np.int64)
    mask[0, :11], mask[1, :5], mask[2, :17] = 1, 1, 1  # longest row: 17 tokens
    batch = {"input_ids": np.arange(120).reshape(3, 40), "token_type_ids": np.ones((3, 40), np.int64),
             "attention_mask": mask, "tags": np.full((3, 40), -100), "start_positions": np.array([3, 0, 16]),
             "labels": np.array([1, 0, 2])}
    trimmed = trim_padding(batch)
    for name in ("input_ids", "token_type_ids", "attention_mask", "tags"):
        np.testing.assert_array_equal(trimmed[name], batch[name][:, :24], err_msg=name)  # 17 -> 24
    for name in ("start_positions", "labels"):
        assert trimmed[name] is batch[name]  # one value per row: untouched
    assert trim_padding(batch, multiple=1)["input_ids"].shape == (3, 17)
    assert trim_padding(batch, multiple=64)["input_ids"].shape == (3, 40)  # never wider than the arrays
    mask[1, 39] = 1  # a row using the last column keeps them all
    assert trim_padding(batch)["attention_mask"].shape == (3, 40)
    assert trim_padding({"attention_mask": np.zeros((2, 30), np.int64)})["attention_mask"].shape == (2, 8)


def test_grouping_by_length_drops_the_same_random_examples_as_the_plain_shuffle():
    """A last batch too small for every process and micro-step sits out the epoch: the same random
    examples with or without grouping, never the run's shortest (sorting put those last)."""
    lengths = np.arange(100)[::-1] + 3  # examples 96..99 are the four shortest
    trained = np.zeros(100, int)  # epochs each example is trained in
    for epoch in range(20):
        plain = global_batches(100, 16, seed=1, epoch=epoch, min_size=8)
        grouped = global_batches(100, 16, seed=1, epoch=epoch, min_size=8, lengths=lengths)
        assert len(plain) == len(grouped) == 6  # 100 = 6 x 16 + 4, and 4 examples cannot fill 8 micro-steps
        kept = np.sort(np.concatenate(grouped))
        np.testing.assert_array_equal(kept, np.sort(np.concatenate(plain)))
        trained[kept] += 1
    assert trained[96:].min() >= 15  # each sits out about 4 epochs in 100 (it was every epoch)
    assert (trained < 20).sum() > 20  # a fresh draw each epoch


def test_batches_grouped_by_length_cover_each_example_once_with_little_spread_the_longest_first():
    lengths = np.random.default_rng(5).integers(5, 300, size=4003)
    plain = global_batches(4003, 16, seed=1, epoch=0, min_size=4)
    grouped = global_batches(4003, 16, seed=1, epoch=0, min_size=4, lengths=lengths)
    assert len(grouped) == len(plain) == 250  # 4003 = 250 × 16 + 3: the short last batch is dropped in both
    covered = np.concatenate(grouped)
    assert len(covered) == len(set(covered.tolist())) == 4000
    spread = [np.ptp(lengths[b]) for b in grouped]
    assert np.median(spread) < 0.1 * np.median([np.ptp(lengths[b]) for b in plain])
    assert lengths[grouped[0]].max() == lengths.max()  # an out-of-memory error would come at step 1
    # runs of GROUP_BATCHES batches are sorted: consecutive batches are not, as the batch order is shuffled
    assert len(set(np.sign(np.diff([lengths[b].mean() for b in grouped[1:40]])))) == 2
    again = global_batches(4003, 16, seed=1, epoch=0, min_size=4, lengths=lengths)
    assert all(np.array_equal(a, b) for a, b in zip(grouped, again))
    other_epoch = global_batches(4003, 16, seed=1, epoch=1, min_size=4, lengths=lengths)
    assert not all(np.array_equal(a, b) for a, b in zip(grouped[1:], other_epoch[1:]))
    # a set smaller than one run is sorted whole
    small = global_batches(40, 8, seed=0, epoch=0, lengths=np.arange(40))
    assert sorted(sorted(b.tolist()) for b in small) == [list(range(i, i + 8)) for i in range(0, 40, 8)]
    assert GROUP_BATCHES * 8 > 40
    with pytest.raises(ValueError, match=r"lengths has shape \(39,\), expected \(40,\)"):
        global_batches(40, 8, seed=0, epoch=0, lengths=np.arange(39))


def test_a_run_grouped_by_length_needs_the_lengths_and_uses_them():
    config = TrainingConfig(train_batch_size=4, num_train_epochs=1, group_by_length=True)
    with pytest.raises(ValueError, match="group_by_length needs the examples' lengths"):
        TrainingRun(config, 12, 1)
    lengths = np.array([1, 9, 2, 8, 3, 7, 4, 6, 5, 10, 11, 12])
    batches = list(TrainingRun(config, 12, 1, lengths=lengths).global_batches())
    assert [sorted(lengths[b].tolist()) for b in batches][0] == [9, 10, 11, 12]
    assert sorted(sorted(lengths[b].tolist()) for b in batches) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]


def test_global_batches_cover_each_example_once_and_depend_on_seed_and_epoch():
    batches = global_batches(10, 4, seed=1, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    again = global_batches(10, 4, seed=1, epoch=0)
    assert all((a == b).all() for a, b in zip(batches, again))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(global_batches(10, 4, seed=1, epoch=1)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(global_batches(10, 4, seed=2, epoch=0)))


def test_last_batch_too_small_for_every_micro_step_is_dropped():
    assert [len(b) for b in global_batches(9, 4, seed=0, epoch=0, min_size=2)] == [4, 4]
    assert [len(b) for b in global_batches(10, 4, seed=0, epoch=0, min_size=2)] == [4, 4, 2]


def test_micro_batches_partition_the_global_batch_over_processes_and_steps():
    batch = np.arange(10)
    parts = [micro_batches(batch, rank, 2, 3) for rank in range(2)]
    assert [len(p) for p in parts[0]] == [2, 2, 1]
    assert [len(p) for p in parts[1]] == [2, 2, 1]
    assert sorted(np.concatenate([np.concatenate(p) for p in parts]).tolist()) == list(range(10))


def test_eval_shards_concatenate_back_in_order():
    for n in (0, 1, 7, 8):
        shards = [eval_shard(n, r, 3) for r in range(3)]
        assert np.concatenate([np.arange(n)[s] for s in shards]).tolist() == list(range(n))


def test_linear_warmup_then_decay():
    assert lr_multiplier(0, 10, 100) == 0.0
    assert lr_multiplier(5, 10, 100) == 0.5
    assert lr_multiplier(10, 10, 100) == 1.0
    assert lr_multiplier(55, 10, 100) == pytest.approx(0.5)
    assert lr_multiplier(100, 10, 100) == 0.0
    assert lr_multiplier(0, 0, 4) == 1.0
    assert lr_multiplier(3, 0, 4) == 0.25


def test_constant_schedule_keeps_the_peak_after_the_warm_up():
    assert [lr_multiplier(s, 4, 10, "constant") for s in (0, 2, 4, 9, 10)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert [lr_multiplier(s, 0, 10, "constant") for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    cfg = TrainingConfig(warmup_proportion=0.25, lr_schedule="constant")
    assert [cfg.lr_multiplier(s, 8) for s in range(8)] == [0.0, 0.5, 1, 1, 1, 1, 1, 1]


def test_steps_and_eval_interval():
    cfg = TrainingConfig(train_batch_size=32, num_train_epochs=2, warmup_proportion=0.1, eval_every=0.5)
    assert cfg.steps_per_epoch(100) == 4          # 32+32+32+4
    assert cfg.total_steps(100) == 8
    assert cfg.warmup_steps(8) == 0
    assert cfg.evaluation_steps(4, 8) == [2, 4, 6, 8]
    assert TrainingConfig(eval_every=50).evaluation_steps(4, 120) == [50, 100, 120]
    assert TrainingConfig(eval_every=0).evaluation_steps(4, 8) == [8]
    assert TrainingConfig(eval_every=0.5).evaluation_steps(1, 3) == [1, 2, 3]
    # a fractional epoch meaning a whole number of steps gives that number, float noise notwithstanding
    assert TrainingConfig(train_batch_size=8, num_train_epochs=7 / 50).total_steps(400) == 7  # 7.000000000000001
    assert TrainingConfig(train_batch_size=8, num_train_epochs=0.141).total_steps(400) == 8


@pytest.mark.parametrize("steps_per_epoch, expected", [
    (5, [3, 5, 8, 10]),  # an interval of round(2.5) = 2 steps would give 2, 4, 6, 8, 10: no epoch end but the last
    (7, [4, 7, 11, 14]),  # an interval of round(3.5) = 4 would give 4, 8, 12, 14
])
def test_fractional_eval_every_lands_on_epoch_ends(steps_per_epoch, expected):
    config = TrainingConfig(eval_every=0.5)
    assert config.evaluation_steps(steps_per_epoch, 2 * steps_per_epoch) == expected
    assert TrainingConfig(eval_every=1 / 3).evaluation_steps(steps_per_epoch, steps_per_epoch)[-1] == steps_per_epoch
    assert TrainingConfig(num_train_epochs=0.5, train_batch_size=10).total_steps(100) == 5


@pytest.mark.parametrize("bad", [dict(precision="fp8"), dict(eval_every=1.5), dict(warmup_proportion=1.0),
                                 dict(lr_schedule="cosine"), dict(learning_rate=0), dict(gradient_accumulation_steps=0)])
def test_invalid_settings_are_rejected_with_the_reason(bad):
    with pytest.raises(ValueError, match="invalid training settings"):
        TrainingConfig(**bad)


@pytest.mark.parametrize("epsilon", [0.0, -1e-8])
def test_adam_epsilon_must_be_positive(epsilon):
    # with 0, AdamW divides 0 by 0 for a weight that got no gradient (an unused embedding row): NaN weights
    with pytest.raises(ValueError, match=f"adam_epsilon must be > 0, got {epsilon}"):
        TrainingConfig(adam_epsilon=epsilon)


def test_seed_report_mean_and_max():
    summary = summarize_seeds({123: {"F1": 80.0, "EM": 60.0}, 456: {"F1": 82.0, "EM": 59.0}}, ["F1", "EM"])
    assert summary["mean"] == {"F1": 81.0, "EM": 59.5}
    assert summary["max"] == {"F1": 82.0, "EM": 60.0}
    md = format_markdown(summary, "CMRC 2018 dev")
    assert "| mean (max) | 81.000 (82.000) | 59.500 (60.000) |" in md
    assert "| 456 | 82.000 | 59.000 |" in md


def test_seed_report_mean_is_the_mean_not_the_median():
    # with two seeds (above) mean and median agree; three skewed seeds tell them apart
    summary = summarize_seeds({1: {"F1": 80.0, "EM": 60.0}, 2: {"F1": 81.0, "EM": 61.0}, 3: {"F1": 90.0, "EM": 71.0}},
                              ["F1", "EM"])
    assert summary["mean"]["F1"] == pytest.approx(251 / 3, abs=1e-9)  # 83.667; the median would be 81
    assert summary["mean"]["EM"] == pytest.approx(64.0, abs=1e-9)  # the median would be 61
    assert "| mean (max) | 83.667 (90.000) | 64.000 (71.000) |" in format_markdown(summary, "CMRC 2018 dev")


H100 = {"cnbert": "0.1.0", "framework": "torch 2.11.0+cu130", "device": "NVIDIA H100 80GB HBM3", "replicas": 8}


def test_seed_report_says_what_trained_the_seeds():
    summary = summarize_seeds({1: {"F1": 80.0}, 2: {"F1": 81.0}, 3: {"F1": 82.0}}, ["F1"])
    summary["environments"] = {"1": H100, "2": H100, "3": H100}
    md = format_markdown(summary, "CMRC 2018 dev")
    assert md.endswith("\nTrained with cnbert 0.1.0, torch 2.11.0+cu130, 8 replicas on NVIDIA H100 80GB HBM3.\n")
    # a continued run whose seeds ran on other set-ups lists each, in the seeds' order
    summary["environments"] = {"1": H100, "2": {**H100, "replicas": 1}, "3": H100, "4": None}
    md = format_markdown(summary, "CMRC 2018 dev")
    assert ("The seeds were trained with different set-ups:\n"
            "- 1, 3: cnbert 0.1.0, torch 2.11.0+cu130, 8 replicas on NVIDIA H100 80GB HBM3\n"
            "- 2: cnbert 0.1.0, torch 2.11.0+cu130, 1 replica on NVIDIA H100 80GB HBM3\n"
            "- 4: a set-up not recorded (an older cnbert)\n") in md
    assert "Trained with" not in md


def test_mrc_criterion_ranks_evaluations_by_f1_plus_em():
    # the runner's one criterion: F1 + EM of the same evaluation, not F1 alone
    from cnbert.tasks.mrc import criterion

    assert criterion({"F1": 50.0, "EM": 40.0, "TOTAL": 10}) == 90.0
    run = TrainingRun(TrainingConfig(train_batch_size=4, num_train_epochs=1), num_examples=8, processes=1,
                      criterion=criterion)
    run.record_evaluation(1, {"F1": 70.0, "EM": 10.0})  # the better F1 ...
    run.record_evaluation(2, {"F1": 60.0, "EM": 35.0})  # ... but the better F1 + EM (95 > 80)
    assert run.result.best_step == 2
    # a NaN score compares false with everything: it would never be the best, and a run of them
    # would end with no best model at all
    with pytest.raises(ValueError, match=r"the evaluation at step 3 scored NaN .* cannot be ranked"):
        run.record_evaluation(3, {"F1": float("nan"), "EM": 35.0})


def test_training_run_walks_the_batch_plan_across_epochs_and_keeps_the_best_evaluation():
    from cnbert.training import NonFiniteLossError, TrainingRun

    cfg = TrainingConfig(train_batch_size=4, num_train_epochs=1.5, eval_every=2, max_consecutive_nonfinite=2)
    saved = []
    run = TrainingRun(cfg, num_examples=10, processes=2, criterion=lambda m: m["F1"] + m["EM"], on_new_best=saved.append)
    assert (run.steps_per_epoch, run.total_steps) == (3, 5)  # 4 + 4 + 2 per epoch; 1.5 epochs -> 5 steps
    batches = list(run.global_batches())
    epoch0 = global_batches(10, 4, seed=cfg.seed, epoch=0, min_size=2)
    epoch1 = global_batches(10, 4, seed=cfg.seed, epoch=1, min_size=2)
    assert [b.tolist() for b in batches] == [b.tolist() for b in (epoch0 + epoch1)[:5]]
    assert [s for s in range(1, 6) if run.evaluation_due(s)] == [2, 4, 5]
    run.record_evaluation(2, {"F1": 70.0, "EM": 10.0})
    run.record_evaluation(4, {"F1": 50.0, "EM": 40.0})
    run.record_evaluation(5, {"F1": 60.0, "EM": 30.0})  # ties with step 4: the earlier stays
    assert [m["step"] for m in saved] == [2, 4] and run.result.best_step == 4
    assert run.check_loss(1, 1.0) and not run.check_loss(2, float("nan")) and run.check_loss(3, 0.5)
    assert not run.check_loss(4, float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"2 consecutive steps \(last at step 5\).*\(step 4\)"):
        run.check_loss(5, float("nan"))
    with pytest.raises(ValueError, match="cannot fill 2 processes × 3 micro-steps"):
        TrainingRun(TrainingConfig(gradient_accumulation_steps=3), num_examples=5, processes=2)
