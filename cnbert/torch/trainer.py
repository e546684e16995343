"""The PyTorch training loop: AdamW, linear schedule, clipping, accumulation, AMP and DDP.

Task code supplies three things: the model, a per-example loss function, and an evaluation
callback. Everything else (the batch plan shared with the TF trainer, mixed precision, the
non-finite-loss guard, choosing the best evaluation by one criterion, TensorBoard and progress)
lives here once.
"""
from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from cnbert.scalar_log import StepLog

from cnbert.torch.distributed import DistContext, all_gather_objects
from cnbert.torch.modeling import set_gradient_checkpointing
from cnbert.torch.optim import build_optimizer, build_scheduler
from cnbert.training import (FitResult, TrainingConfig, TrainingRun, eval_shard, example_lengths, micro_batches,
                             trim_padding, zero_padding_outputs)

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains `model` on numpy feature arrays.

    loss_fn(outputs, batch) -> per-example loss, shape [b], computed in float32.
    input_names: the arrays passed to the model as keyword arguments; the other arrays a batch
    holds (labels) reach only loss_fn. config.gradient_checkpointing switches per-layer
    recomputation on the model's encoder (set_gradient_checkpointing).
    trim_padding: run each training micro-batch, and each prediction batch (rows sorted by length),
    only as wide as its longest row (cnbert.training.trim_padding). Only for losses that read no
    padding position: a classifier's, a tagger's (padding is ignored); not the span losses, whose
    softmax runs over every position of the window, padding included, as Google's and
    transformers' do (and whose post-processing reads every position's logits).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainingConfig,
        loss_fn: Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor],
        input_names: Sequence[str] = ("input_ids", "token_type_ids", "attention_mask"),
        ctx: DistContext | None = None,
        log_dir=None,
        show_progress: bool = True,
        trim_padding: bool = False,
    ):
        self.config = config
        self.trim_padding = trim_padding
        self.ctx = ctx or DistContext()
        self.model = model.to(self.ctx.device)
        set_gradient_checkpointing(self.model, config.gradient_checkpointing)
        self.loss_fn = loss_fn
        self.input_names = tuple(input_names)
        self.log_dir = log_dir
        self.show_progress = show_progress and self.ctx.is_main
        self.autocast_dtype = AUTOCAST_DTYPES.get(config.precision)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.autocast_dtype)

    def _to_device(self, arrays: Mapping[str, np.ndarray], index) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v[index])).to(self.ctx.device) for k, v in arrays.items()}

    def fit(
        self,
        train: Mapping[str, np.ndarray],
        evaluate: Callable[[], dict] | None = None,
        criterion: Callable[[dict], float] | None = None,
        on_new_best: Callable[[dict], None] | None = None,
    ) -> FitResult:
        """Train for config.num_train_epochs. `evaluate()` runs on every process and returns the
        same metrics everywhere; the best evaluation is the one with the highest `criterion`
        (ties keep the earlier); `on_new_best(metrics)` runs on the main process only."""
        cfg, ctx = self.config, self.ctx
        run = TrainingRun(cfg, len(next(iter(train.values()))), ctx.world_size, criterion,
                          on_new_best if ctx.is_main else None, lengths=example_lengths(train))
        seed_everything(cfg.seed + ctx.rank)  # dropout streams differ per process, as with any DDP run
        model = self.model
        model.train()
        wrapped = DistributedDataParallel(model) if ctx.distributed else model
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, run.total_steps)
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
        step_log = StepLog(run.total_steps, cfg.logging_steps, self.log_dir if ctx.is_main else None, self.show_progress)
        try:
            for step, batch_index in enumerate(run.global_batches(), start=1):
                loss_value = self._accumulate(wrapped, train, batch_index, scaler)
                run.record_loss(step, loss_value)  # first: the step that stops a diverged run is logged too
                if run.check_loss(step, loss_value) or scaler.is_enabled():
                    self._optimizer_step(model, optimizer, scaler)  # with fp16 the scaler skips a non-finite step
                optimizer.zero_grad(set_to_none=True)
                step_log.step(step, loss_value, scheduler.get_last_lr()[0])  # the rate this step used
                scheduler.step()
                if evaluate and run.evaluation_due(step):
                    metrics = evaluate()
                    model.train()
                    step_log.evaluation(step, metrics)
                    run.record_evaluation(step, metrics)
        finally:
            step_log.close()
        return run.result

    def _accumulate(self, wrapped, train, batch_index, scaler) -> float:
        """Forward/backward over this process's micro-batches of one global batch; returns the
        global mean loss (identical on every process)."""
        ctx = self.ctx
        micro = micro_batches(batch_index, ctx.rank, ctx.world_size, self.config.gradient_accumulation_steps)
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for i, index in enumerate(micro):
            batch = {name: array[index] for name, array in train.items()}
            if self.trim_padding:  # to a multiple of 8; the TF trainer trims whole steps to a few widths (XLA)
                batch = trim_padding(batch)
            batch = self._to_device(batch, slice(None))
            sync = i == len(micro) - 1
            with (contextlib.nullcontext() if sync or not ctx.distributed else wrapped.no_sync()):
                with self._autocast():
                    outputs = wrapped(**{k: batch[k] for k in self.input_names})
                per_example = self.loss_fn(outputs, batch).float()
                # sum / global batch; DDP averages gradients over processes, hence × world_size
                loss = per_example.sum() * (ctx.world_size / len(batch_index))
                scaler.scale(loss).backward()
            loss_sum += per_example.detach().double().sum()
        if ctx.distributed:
            torch.distributed.all_reduce(loss_sum)
        return float(loss_sum) / len(batch_index)

    def _optimizer_step(self, model, optimizer, scaler) -> None:
        if self.config.max_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()

    @torch.no_grad()
    def predict(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model outputs (float32 numpy) for every row of `arrays`, in order; a tagger's logits are
        0 at padding positions (zero_padding_outputs). Each process runs its contiguous shard; the
        shards are gathered to every process. With trim_padding, the shard's rows run shortest first,
        each batch only as wide as its longest row, and come back in their order."""
        ctx, model = self.ctx, self.model
        model.eval()
        n = len(next(iter(arrays.values())))
        if n == 0:
            raise ValueError("predict() got no rows")
        shard = eval_shard(n, ctx.rank, ctx.world_size)
        rows = np.arange(shard.start, shard.stop)
        if self.trim_padding and "attention_mask" in arrays:
            rows = rows[np.argsort(np.asarray(arrays["attention_mask"])[rows].sum(axis=1), kind="stable")]
        width = np.asarray(arrays["input_ids"]).shape[1]
        pieces: dict[str, list[np.ndarray]] = {}
        bs = self.config.eval_batch_size
        for start in range(0, len(rows), bs):
            batch = {k: arrays[k][rows[start:start + bs]] for k in self.input_names}
            if self.trim_padding and "attention_mask" in batch:
                batch = trim_padding(batch)
            with self._autocast():
                outputs = model(**self._to_device(batch, slice(None)))
            for key, value in outputs.items():
                value = value.float().cpu().numpy()
                if value.ndim == 3 and value.shape[1] < width:  # a trimmed tagger's: the cut columns back
                    value = np.pad(value, ((0, 0), (0, width - value.shape[1]), (0, 0)))
                pieces.setdefault(key, []).append(value)
        local = {k: np.concatenate(v)[np.argsort(rows, kind="stable")] for k, v in pieces.items()}
        gathered = [part for part in all_gather_objects(local, ctx) if part]
        outputs = {k: np.concatenate([part[k] for part in gathered]) for k in gathered[0]}
        return zero_padding_outputs(outputs, arrays["attention_mask"]) if "attention_mask" in arrays else outputs

