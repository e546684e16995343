"""The PyTorch Trainer on a tiny model: reproducibility, accumulation, precision, non-finite loss."""
import contextlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO
from cnbert.config import BertConfig
from cnbert.torch import (BertForSequenceClassification, BertForSpanExtraction, BertForTokenClassification,
                          classification_loss, span_loss)
from cnbert.torch.distributed import DistContext
from cnbert.torch.trainer import Trainer
from cnbert.training import NonFiniteLossError
from cnbert.training import TrainingConfig

TINY = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def loss_fn(outputs, batch):
    return span_loss(outputs, batch["start_positions"], batch["end_positions"], reduction="none")


def toy_data(n=24, length=16, seed=0):
    """Features whose answer is always at the position of token 7: learnable by a tiny model."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, 50, size=(n, length))
    where = rng.integers(1, length - 1, size=n)
    ids[np.arange(n), where] = 7
    return {"input_ids": ids.astype(np.int64), "token_type_ids": np.zeros_like(ids),
            "attention_mask": np.ones_like(ids), "start_positions": where.astype(np.int64),
            "end_positions": where.astype(np.int64)}


def fresh_model(config=TINY):
    torch.manual_seed(0)
    return BertForSpanExtraction(config)


def fit(model, **settings):
    cfg = TrainingConfig(**{"learning_rate": 5e-3, "num_train_epochs": 3, "train_batch_size": 8,
                            "warmup_proportion": 0.1, **settings})
    trainer = Trainer(model, cfg, loss_fn, show_progress=False)
    return trainer, trainer.fit(toy_data())


def test_same_seed_gives_the_same_loss_curve_and_the_loss_goes_down():
    _, a = fit(fresh_model(), seed=7)
    _, b = fit(fresh_model(), seed=7)
    _, c = fit(fresh_model(), seed=8)
    assert [loss for _, loss in a.losses] == [loss for _, loss in b.losses]
    assert [loss for _, loss in a.losses] != [loss for _, loss in c.losses]
    assert len(a.losses) == 9  # 24 features / 8 per step × 3 epochs
    assert np.mean([l for _, l in a.losses[-3:]]) < 0.8 * np.mean([l for _, l in a.losses[:3]])


def test_a_classifier_trains_only_as_wide_as_each_micro_batch_needs_with_the_same_losses(monkeypatch):
    """Classification losses read no padding position: trimmed micro-batches give the losses of
    full-width ones. (The span losses' softmax covers the padding, so span models are not trimmed.)"""
    data = toy_data(length=32)
    lengths = np.random.default_rng(1).integers(12, 21, size=24)  # at most 20 of 32 columns used
    data["attention_mask"] = (np.arange(32) < lengths[:, None]).astype(np.int64)
    data["labels"] = (data["input_ids"][:, 0] % 3).astype(np.int64)
    widths = []
    forward = BertForSequenceClassification.forward
    monkeypatch.setattr(BertForSequenceClassification, "forward",
                        lambda self, input_ids, *a, **k: widths.append(input_ids.shape[1]) or forward(
                            self, input_ids, *a, **k))

    def losses(trim, group_by_length=False):
        widths.clear()
        torch.manual_seed(0)
        model = BertForSequenceClassification(TINY, ("a", "b", "c"))
        cfg = TrainingConfig(learning_rate=5e-3, num_train_epochs=2, train_batch_size=8, seed=3,
                             group_by_length=group_by_length)
        trainer = Trainer(model, cfg, lambda out, b: classification_loss(out, b["labels"], reduction="none"),
                          show_progress=False, trim_padding=trim)
        return [loss for _, loss in trainer.fit(data).losses]

    trimmed = losses(True)
    assert set(widths) <= {16, 24} and 24 in widths  # the longest row of each batch, rounded up to 8
    random_widths = list(widths)
    untrimmed = losses(False)
    assert set(widths) == {32}
    np.testing.assert_allclose(trimmed, untrimmed, rtol=0, atol=1e-6)
    # batches of similar lengths leave less to compute: the shortest examples share a batch
    losses(True, group_by_length=True)
    assert len(widths) == len(random_widths) and sum(widths) < sum(random_widths)


def test_gradient_accumulation_matches_one_big_batch():
    # dropout is off, so 2 micro-steps of 4 must give the same updates as one batch of 8
    _, one = fit(fresh_model(), seed=3)
    _, accumulated = fit(fresh_model(), seed=3, gradient_accumulation_steps=2)
    np.testing.assert_allclose([l for _, l in accumulated.losses], [l for _, l in one.losses], rtol=1e-5, atol=1e-6)


def flat_gradients_at_each_step(monkeypatch):
    """Patches AdamW.step to record the gradient every optimizer step receives (all parameters,
    flattened into one vector); returns the list it fills."""
    seen = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(torch.cat([p.grad.detach().flatten().clone() for group in self.param_groups
                               for p in group["params"] if p.grad is not None]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    return seen


def test_gradient_accumulation_hands_the_optimizer_the_one_big_batch_gradient(monkeypatch):
    # The losses above cannot see the scale of the gradient: AdamW is nearly scale-invariant and
    # clipping hides it too. With clipping off, the gradient the optimizer receives at step 1
    # (identical starting weights) must be the global-batch mean however the batch was split:
    # dividing each micro-batch by its own size instead of the global batch doubles it.
    grads = flat_gradients_at_each_step(monkeypatch)
    fit(fresh_model(), seed=3, max_grad_norm=0.0, num_train_epochs=1)
    one = grads[0]
    grads.clear()
    fit(fresh_model(), seed=3, max_grad_norm=0.0, num_train_epochs=1, gradient_accumulation_steps=2)
    accumulated = grads[0]
    assert one.abs().max() > 1e-3  # a real gradient, not zeros
    torch.testing.assert_close(accumulated, one, rtol=1e-5, atol=1e-7)


def test_uneven_last_batch_is_a_true_global_mean():
    # 20 features, batch 8: the third step has 4 features; with accumulation 3 its micro-batches are
    # 2, 1, 1 features, and the loss must still be the mean over those 4.
    model = fresh_model()
    cfg = TrainingConfig(learning_rate=1e-12, num_train_epochs=1, train_batch_size=8, gradient_accumulation_steps=3,
                         warmup_proportion=0.0)
    data = {k: v[:20] for k, v in toy_data().items()}
    result = Trainer(model, cfg, loss_fn, show_progress=False).fit(data)
    from cnbert.training import global_batches
    last = global_batches(20, 8, seed=cfg.seed, epoch=0)[-1]
    model.eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(data[k][last]) for k in ("input_ids", "token_type_ids", "attention_mask")})
        expected = loss_fn(out, {k: torch.from_numpy(v[last]) for k, v in data.items()}).mean().item()
    assert result.losses[-1][1] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_learning_rate_follows_warmup_then_the_schedule(tmp_path, schedule):
    model = fresh_model()
    cfg = TrainingConfig(learning_rate=1e-3, num_train_epochs=10, train_batch_size=8, warmup_proportion=0.2,
                         lr_schedule=schedule, logging_steps=1)
    trainer = Trainer(model, cfg, loss_fn, show_progress=False, log_dir=tmp_path)
    seen = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = spy
    try:
        trainer.fit(toy_data())
    finally:
        torch.optim.AdamW.step = original
    # 30 steps, 6 warm-up steps: lr at step s (0-based) is s/6, then (30-s)/24 (linear) or 1, times 1e-3
    expected = [1e-3 * (s / 6 if s < 6 else (30 - s) / 24 if schedule == "linear" else 1) for s in range(30)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    # TensorBoard logs, for each step, the rate that step used
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    logged = [(event.step, event.value) for event in events.Scalars("train/learning_rate")]
    assert [step for step, _ in logged] == list(range(1, 31))
    np.testing.assert_allclose([value for _, value in logged], expected, rtol=1e-6, atol=1e-12)


def test_weight_decay_skips_biases_and_layer_norm():
    from cnbert.torch.optim import build_optimizer
    model = fresh_model()
    optimizer = build_optimizer(model, TrainingConfig(weight_decay=0.01))
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in decayed) == (not (name.endswith("bias") or "LayerNorm" in name)), name
    assert optimizer.param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_weight_decay_applies_under_every_precision(precision):
    # The original list's fp16 path applied no weight decay (REFERENCE.md section 5). With a loss of
    # zero gradient, one AdamW step moves each decayed weight by exactly lr * decay * weight (the
    # scaled fp16 gradient stays zero) and leaves biases and LayerNorm alone.
    model = fresh_model()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    config = TrainingConfig(learning_rate=0.1, weight_decay=0.5, warmup_proportion=0.0, lr_schedule="constant",
                            num_train_epochs=1, train_batch_size=24, precision=precision)
    Trainer(model, config, lambda outputs, batch: 0.0 * loss_fn(outputs, batch), show_progress=False).fit(toy_data())
    for name, param in model.named_parameters():
        factor = 1.0 if name.endswith("bias") or "LayerNorm" in name else 1 - 0.1 * 0.5
        torch.testing.assert_close(param.detach(), before[name] * factor, rtol=1e-6, atol=0, msg=name)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_fp32_loss(precision):
    _, result = fit(fresh_model(), seed=1, precision=precision)
    losses = [l for _, l in result.losses]
    assert all(math.isfinite(l) for l in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def first_clipped_norm(monkeypatch, precision):
    """The total gradient norm clip_grad_norm_ measures at the first optimizer step of a run."""
    norms = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(*args, **kwargs):
        norms.append(float(original(*args, **kwargs)))
        return norms[-1]

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
        fit(fresh_model(), seed=1, precision=precision, num_train_epochs=1, max_grad_norm=1.0)
    return norms[0]


def test_fp16_clips_the_unscaled_gradient(monkeypatch):
    # With fp16 the backward pass runs on the loss times the GradScaler's scale (2**16 at first);
    # the gradients must be unscaled before clipping, or the norm is 65536x too large and every
    # step is clipped to a near-zero update. Same weights and batch: the fp16 norm is the fp32 norm
    # within half-precision rounding (1 %).
    fp32 = first_clipped_norm(monkeypatch, "fp32")
    fp16 = first_clipped_norm(monkeypatch, "fp16")
    assert math.isfinite(fp16) and fp32 > 1e-3
    assert fp16 == pytest.approx(fp32, rel=1e-2)


class NoProcessGroup(torch.nn.Module):
    """Stands in for DistributedDataParallel where no process group exists (one process playing rank 1)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def no_sync(self):
        return contextlib.nullcontext()


def test_each_process_seeds_its_random_streams_with_seed_plus_rank(monkeypatch):
    # dropout must differ between DDP processes: rank r seeds torch, numpy and random with seed + r.
    # Rank 1 of 2 is played by one process, with DDP and the loss all-reduce stubbed out.
    import cnbert.torch.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "DistributedDataParallel", NoProcessGroup)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, *args, **kwargs: None)
    cfg = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=8, seed=7)
    seeds = {}
    for rank in (0, 1):
        def recording_loss(outputs, batch, rank=rank):
            seeds.setdefault(rank, torch.initial_seed())  # the seed in force at the first forward pass
            return loss_fn(outputs, batch)

        ctx = DistContext(rank=rank, world_size=2)
        Trainer(fresh_model(), cfg, recording_loss, ctx=ctx, show_progress=False).fit(toy_data())
    assert seeds == {0: 7, 1: 8}


def test_best_evaluation_uses_one_criterion_and_repeated_nan_loss_stops_keeping_the_best():
    model = fresh_model()
    calls = {"n": 0}

    def evaluate():
        calls["n"] += 1
        return {"F1": [50.0, 70.0, 60.0][calls["n"] - 1], "EM": [40.0, 10.0, 35.0][calls["n"] - 1]}

    saved = []
    cfg = TrainingConfig(learning_rate=1e-3, num_train_epochs=3, train_batch_size=8, eval_every=3)
    result = Trainer(model, cfg, loss_fn, show_progress=False).fit(
        toy_data(), evaluate=evaluate, criterion=lambda m: m["F1"] + m["EM"], on_new_best=saved.append)
    # F1+EM: 90, 80, 95 -> the third; never the best F1 (70) with the best EM (40) mixed together
    assert result.best_step == 9 and result.best_metrics["F1"] == 60.0 and result.best_metrics["EM"] == 35.0
    assert [m["step"] for m in saved] == [3, 9]

    def poisoned(outputs, batch):
        loss = loss_fn(outputs, batch)
        return loss * float("nan") if poisoned.step >= 3 else loss

    poisoned.step = 0

    def count_steps(outputs, batch):
        out = poisoned(outputs, batch)
        poisoned.step += 1
        return out

    kept = []
    cfg = TrainingConfig(learning_rate=1e-3, num_train_epochs=5, train_batch_size=8, eval_every=1,
                         max_consecutive_nonfinite=3)
    trainer = Trainer(fresh_model(), cfg, count_steps, show_progress=False)
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps.*best checkpoint saved so far \\(step 1\\)") as info:
        trainer.fit(toy_data(), evaluate=lambda: {"F1": 1.0, "EM": 1.0}, criterion=lambda m: 0.0,
                    on_new_best=kept.append)
    # every step's loss is in the history, the one that stopped the run included
    losses = info.value.result.losses
    assert [step for step, _ in losses] == list(range(1, len(losses) + 1))
    assert f"(last at step {losses[-1][0]})" in str(info.value) and not math.isfinite(losses[-1][1])
    assert [m["step"] for m in kept] == [1]  # ties keep the earlier evaluation
    # parameters were not touched by the NaN steps
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_tensorboard_logging_imports_no_tensorflow_and_leaves_tensorflow_summaries_working(tmp_path):
    """In a fresh process: a logged PyTorch fit imports no TensorFlow, and TensorFlow's own summaries
    still work afterwards (a `tensorboard.compat.notf` stub, the usual trick, would break them)."""
    code = f"""
import sys
import numpy as np
sys.path.insert(0, {str(REPO / 'tests')!r})
from test_torch_trainer import fresh_model, loss_fn, toy_data
from cnbert.torch.trainer import Trainer
from cnbert.training import TrainingConfig
cfg = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=8, logging_steps=1)
Trainer(fresh_model(), cfg, loss_fn, show_progress=False, log_dir={str(tmp_path / 'torch')!r}).fit(toy_data())
print("tensorflow imported:", "tensorflow" in sys.modules)
import tensorflow as tf
with tf.summary.create_file_writer({str(tmp_path / 'tf')!r}).as_default():
    tf.summary.scalar("x", 1.0, step=1)
print("tf summary written")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tensorflow imported: False" in proc.stdout and "tf summary written" in proc.stdout
    events = EventAccumulator(str(tmp_path / "torch"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3]


@pytest.mark.parametrize("model_class", [BertForSequenceClassification, BertForTokenClassification])
def test_trimmed_prediction_runs_rows_by_length_and_returns_them_in_order(model_class, monkeypatch):
    data = toy_data(n=37, length=32)
    lengths = np.random.default_rng(2).integers(3, 33, size=37)
    data["attention_mask"] = (np.arange(32) < lengths[:, None]).astype(np.int64)
    torch.manual_seed(0)
    model = model_class(TINY, ("a", "b", "c"))
    widths = []
    forward = model_class.forward
    monkeypatch.setattr(model_class, "forward", lambda self, input_ids, *a, **k: widths.append(input_ids.shape[1])
                        or forward(self, input_ids, *a, **k))
    cfg = TrainingConfig(eval_batch_size=8)
    full = Trainer(model, cfg, loss_fn, show_progress=False).predict(data)["logits"]
    assert widths == [32] * 5
    widths.clear()
    trimmed = Trainer(model, cfg, loss_fn, show_progress=False, trim_padding=True).predict(data)["logits"]
    assert widths == sorted(widths) and widths[0] < 32  # shortest rows first, each batch only as wide as it needs
    np.testing.assert_allclose(trimmed, full, rtol=0, atol=1e-5)  # row order restored
    if model_class is BertForTokenClassification:  # per-token logits: 0 at every padding position
        assert full.shape == (37, 32, 3) and np.all(full[data["attention_mask"] == 0] == 0)
        assert np.abs(full[data["attention_mask"] == 1]).min() > 0


def test_each_optimizer_step_gets_only_its_own_batch_gradient(monkeypatch):
    """One batch of all 24 features per step, a learning rate too small to move the weights, no
    clipping: step 2 sees the gradient step 1 saw (one never zeroed would be twice it)."""
    grads = flat_gradients_at_each_step(monkeypatch)
    config = TrainingConfig(learning_rate=1e-12, num_train_epochs=2, train_batch_size=24, warmup_proportion=0.0,
                            max_grad_norm=0.0)
    Trainer(fresh_model(), config, loss_fn, show_progress=False).fit(toy_data())
    assert len(grads) == 2 and grads[0].abs().max() > 1e-3
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)


def test_training_after_an_evaluation_is_in_train_mode_and_predict_is_in_eval_mode():
    model = fresh_model(TINY.replace(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3))
    modes = []

    def recording_loss(outputs, batch):
        modes.append(model.training)
        return loss_fn(outputs, batch)

    config = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=8, eval_every=1)
    trainer = Trainer(model, config, recording_loss, show_progress=False)
    data = toy_data()
    inputs = {k: data[k][:8] for k in ("input_ids", "token_type_ids", "attention_mask")}
    trainer.fit(data, evaluate=lambda: trainer.predict(inputs) and {"x": 0.0}, criterion=lambda m: 0.0)
    assert modes == [True, True, True]  # 3 steps, each but the first after an evaluation
    # predict: dropout off, so two calls on a model left in train mode agree, and equal eval mode
    model.train()
    first, second = (trainer.predict(inputs)["start_logits"] for _ in range(2))
    np.testing.assert_array_equal(first, second)
    with torch.no_grad():
        want = model.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()})["start_logits"].numpy()
    np.testing.assert_allclose(first, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_runs_the_encoder_in_the_precision_asked_for(precision, dtype):
    model = fresh_model()
    seen = []
    model.bert.encoder.layer[0].intermediate.dense.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    config = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=8, precision=precision)
    trainer = Trainer(model, config, loss_fn, show_progress=False)
    trainer.fit(toy_data())
    assert seen and set(seen) == {dtype}
    seen.clear()
    trainer.predict({k: v for k, v in toy_data().items() if k in ("input_ids", "token_type_ids", "attention_mask")})
    assert seen and set(seen) == {dtype}  # evaluation runs as training does


def test_fp16_gradients_of_a_tiny_loss_match_fp32(monkeypatch):
    """A loss 1e-6 times the span loss: the FFN weight's gradient (an fp16 matmul under autocast) is
    at most about 2e-9, below fp16's smallest subnormal (6e-8); only the GradScaler's 2**16 keeps it
    from coming out of the backward pass as zeros."""
    seen = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.ffn_weight.grad.detach().clone())  # unscaled by now
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    for precision in ("fp32", "fp16"):
        model = fresh_model()
        monkeypatch.setattr(torch.optim.AdamW, "ffn_weight", model.bert.encoder.layer[0].intermediate.dense.weight,
                            raising=False)
        config = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=8, max_grad_norm=0.0,
                                precision=precision)
        Trainer(model, config, lambda outputs, batch: loss_fn(outputs, batch) * 1e-6, show_progress=False).fit(
            toy_data())
    fp32, fp16 = seen[0], seen[3]  # the first step of each run (3 steps each)
    assert float(fp32.abs().max()) > 1e-10
    assert float((fp16 - fp32).norm()) < 0.05 * float(fp32.norm())


def test_ddp_synchronises_only_the_last_micro_step(monkeypatch):
    import cnbert.torch.trainer as trainer_module

    syncs = []

    class RecordingDDP(torch.nn.Module):  # DistributedDataParallel without a process group
        def __init__(self, module):
            super().__init__()
            self.module, self.syncing = module, True

        def forward(self, *args, **kwargs):
            syncs.append(self.syncing)
            return self.module(*args, **kwargs)

        @contextlib.contextmanager
        def no_sync(self):
            self.syncing = False
            yield
            self.syncing = True

    monkeypatch.setattr(trainer_module, "DistributedDataParallel", RecordingDDP)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, *args, **kwargs: None)
    config = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=12, gradient_accumulation_steps=3)
    Trainer(fresh_model(), config, loss_fn, ctx=DistContext(rank=0, world_size=2), show_progress=False).fit(toy_data())
    assert syncs == [False, False, True] * 2  # 24 features / 12 per step; 3 micro-steps of 2 per process


def test_init_distributed_reads_the_global_rank(monkeypatch):
    # on several nodes LOCAL_RANK repeats; RANK says which process writes
    from cnbert.torch.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "1")  # no process group is started
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.local_rank, ctx.is_main) == (5, 1, False)
