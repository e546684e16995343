"""Framework-neutral training settings and the batch plan both trainers follow.

The batch plan is what makes a multi-process run reproduce a single-process one: every epoch
draws one permutation from the seed, cuts it into global batches, and each optimizer step's
global batch is split between processes and accumulation micro-steps. Each micro-batch's loss
is the sum of its per-example losses divided by the global batch size, so the summed gradient is
the global-batch mean however the batch was split.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("linear", "constant")  # what follows the warm-up (lr_multiplier)


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss stayed NaN/inf; earlier checkpoints are untouched.
    `result` holds the run's evaluations and losses up to the stop."""

    def __init__(self, message: str, result: "FitResult | None" = None):
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class FitResult:
    best_metrics: dict | None
    best_step: int | None
    evaluations: list[dict]          # every evaluation, with its "step"
    losses: list[tuple[int, float]]  # (optimizer step, mean training loss of that step)


@dataclasses.dataclass
class TrainingConfig:
    learning_rate: float = 3e-5
    num_train_epochs: float = 2.0
    train_batch_size: int = 32          # global batch per optimizer step (all processes, all micro-steps)
    eval_batch_size: int = 64           # per process
    gradient_accumulation_steps: int = 1
    warmup_proportion: float = 0.1
    lr_schedule: str = "linear"         # after the warm-up: LR_SCHEDULES
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6          # Google BERT's AdamWeightDecay value, used by the original list
    max_grad_norm: float = 1.0          # global-norm clipping; 0 disables
    precision: str = "fp32"
    seed: int = 123
    eval_every: float = 0.0             # >= 1: every that many steps; (0, 1): that fraction of an epoch; 0: end only
    max_consecutive_nonfinite: int = 5  # stop after this many non-finite losses in a row
    logging_steps: int = 10
    gradient_checkpointing: bool = False  # recompute each encoder layer in the backward pass: less memory, more compute
    group_by_length: bool = False  # batches of examples of similar length (global_batches): less padding to compute

    def __post_init__(self):
        problems = []
        real_valued = ("learning_rate", "num_train_epochs", "warmup_proportion", "weight_decay", "adam_epsilon",
                       "max_grad_norm", "eval_every")
        # NaN passes every comparison below as False, and inf makes a step count overflow.
        problems += [f"{name} must be a finite number, got {getattr(self, name)}"
                     for name in real_valued if not math.isfinite(getattr(self, name))]
        if problems:
            raise ValueError("invalid training settings: " + "; ".join(problems))
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.num_train_epochs <= 0:
            problems.append(f"num_train_epochs must be > 0, got {self.num_train_epochs}")
        if self.train_batch_size < 1 or self.eval_batch_size < 1:
            problems.append("batch sizes must be >= 1")
        if self.gradient_accumulation_steps < 1:
            problems.append("gradient_accumulation_steps must be >= 1")
        if not 0 <= self.warmup_proportion < 1:
            problems.append(f"warmup_proportion must be in [0, 1), got {self.warmup_proportion}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            problems.append("weight_decay and max_grad_norm must be >= 0")
        if self.adam_epsilon <= 0:  # 0 divides 0 by 0 for a weight without gradient: NaN weights
            problems.append(f"adam_epsilon must be > 0, got {self.adam_epsilon}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.eval_every < 0 or (self.eval_every >= 1 and self.eval_every != int(self.eval_every)):
            problems.append(f"eval_every must be 0, a fraction of an epoch in (0, 1) or a whole number of steps, got {self.eval_every}")
        if self.max_consecutive_nonfinite < 1:
            problems.append("max_consecutive_nonfinite must be >= 1")
        if problems:
            raise ValueError("invalid training settings: " + "; ".join(problems))

    def steps_per_epoch(self, num_examples: int, world_size: int = 1) -> int:
        return len(global_batches(num_examples, self.train_batch_size, seed=0, epoch=0,
                                  min_size=world_size * self.gradient_accumulation_steps))

    def total_steps(self, num_examples: int, world_size: int = 1) -> int:
        """ceil(epochs × steps per epoch), the product rounded first to 9 decimals, so that float noise
        (7/50 epochs × 50 steps = 7.000000000000001) does not add a step."""
        return max(1, math.ceil(round(self.steps_per_epoch(num_examples, world_size) * self.num_train_epochs, 9)))

    def check_enough_examples(self, num_examples: int, processes: int) -> None:
        """Raise ValueError when `num_examples` cannot give each of `processes` data-parallel workers
        an example for every accumulation micro-step."""
        accum = self.gradient_accumulation_steps
        if num_examples < processes * accum:
            raise ValueError(f"{num_examples} training features cannot fill {processes} processes × {accum} micro-steps")

    def check_batch_split(self, processes: int) -> None:
        """Raise ValueError when a global batch cannot give each of `processes` data-parallel workers
        an example for every accumulation micro-step."""
        accum = self.gradient_accumulation_steps
        if self.train_batch_size < processes * accum:
            raise ValueError(f"train_batch_size {self.train_batch_size} is smaller than processes × accumulation "
                             f"steps ({processes} × {accum})")

    def warmup_steps(self, total_steps: int) -> int:
        return int(total_steps * self.warmup_proportion)

    def lr_multiplier(self, step: int, total_steps: int) -> float:
        """The multiplier of the peak learning rate at optimizer step `step` (0 before the first)."""
        return lr_multiplier(step, self.warmup_steps(total_steps), total_steps, self.lr_schedule)

    def evaluation_steps(self, steps_per_epoch: int, total_steps: int) -> list[int]:
        """The optimizer steps after which to evaluate; the last step always.

        A fraction f of an epoch means the steps nearest to f, 2f, 3f, ... epochs, so that f = 0.5
        evaluates mid-epoch and at every epoch's end whatever the number of steps per epoch (a
        fixed interval of round(f * steps_per_epoch) steps would drift off the epoch ends).
        """
        if self.eval_every == 0:
            points = []
        elif self.eval_every >= 1:
            points = range(int(self.eval_every), total_steps, int(self.eval_every))
        else:
            span = steps_per_epoch * self.eval_every  # steps per evaluation, not a whole number
            if span <= 1:
                points = range(1, total_steps)
            else:
                points = [math.floor(k * span + 0.5) for k in range(1, math.ceil(total_steps / span))]
        return sorted({step for step in points if step < total_steps} | {total_steps})


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: str = "linear") -> float:
    """Learning-rate multiplier: linear warm-up from 0 to 1 over `warmup_steps`, then
    - "linear": linear decay to 0 at total_steps (Google BERT's optimization.py, the original list);
    - "constant": 1 to the end (ERNIE's fine-tuning scripts, whose optimizer keeps the learning rate
      constant when warmup_proportion is 0)."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


# With group_by_length, examples are sorted by length within runs of this many shuffled batches.
GROUP_BATCHES = 50


def global_batches(num_examples: int, batch_size: int, seed: int, epoch: int, min_size: int = 1,
                   lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """One epoch's shuffled global batches. A last batch smaller than `min_size` (fewer examples
    than processes × micro-steps, so some micro-step would be empty) is dropped: its examples, a
    random draw, sit out this epoch.

    With `lengths` (tokens per example), each batch holds examples of similar length, so that a
    trainer that cuts the padding (trim_padding) computes little of it: the epoch's shuffled order
    is cut into runs of GROUP_BATCHES batches, each run is sorted by length and cut into batches,
    and the batches are shuffled, the one holding the longest example first (running out of memory
    then happens at the first step, not hours in). The batch count is the same as without."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_examples)
    remainder = num_examples % batch_size
    if 0 < remainder < min_size:
        # The last batch would leave a micro-step empty: its examples sit out this epoch. They are
        # dropped before any grouping, so they are a random draw either way, never the shortest.
        order = order[:num_examples - remainder]
    if lengths is None:
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (num_examples,):
            raise ValueError(f"lengths has shape {lengths.shape}, expected ({num_examples},)")
        span = GROUP_BATCHES * batch_size
        runs = [run[np.argsort(-lengths[run], kind="stable")] for run in
                (order[i:i + span] for i in range(0, len(order), span))]
        batches = [run[i:i + batch_size] for run in runs for i in range(0, len(run), batch_size)]
    if lengths is not None and batches:
        batches = [batches[i] for i in rng.permutation(len(batches))]
        longest = max(range(len(batches)), key=lambda b: lengths[batches[b]].max())
        batches.insert(0, batches.pop(longest))
    return batches


def micro_batches(global_batch: np.ndarray, rank: int, world_size: int, accumulation_steps: int) -> list[np.ndarray]:
    """This process's share of a global batch, split into accumulation micro-batches."""
    mine = global_batch[rank::world_size]
    return [chunk for chunk in np.array_split(mine, accumulation_steps)]


# Arrays with one entry per token ([rows, seq]); trim_padding cuts these.
TOKEN_ARRAYS = ("input_ids", "token_type_ids", "attention_mask", "tags")


def trim_padding(batch: Mapping[str, np.ndarray], multiple: int = 8) -> dict[str, np.ndarray]:
    """The batch without the padding columns that every row masks: its per-token arrays
    (TOKEN_ARRAYS) cut after the last column any row's attention_mask uses, rounded up to a
    multiple of `multiple` (matrix units work in blocks of 8). Masked keys get exactly zero
    attention, so the outputs at the kept positions are unchanged, up to the order of float sums;
    so is a loss that reads no padding position (a classifier's, a tagger's; not the span losses,
    whose softmax covers the padding too). The compute saved is the cut columns' share, large for
    short texts padded to a long set (LCQMC: median 23 pieces, padded to 128). The PyTorch trainer
    cuts its training micro-batches and, rows sorted by length, its prediction batches; the TF
    trainer cuts whole steps to a few widths (bucket_width)."""
    mask = np.asarray(batch["attention_mask"])
    keep = min(mask.shape[1], -(-used_width(mask) // multiple) * multiple)
    return {name: array[:, :keep] if name in TOKEN_ARRAYS else array for name, array in batch.items()}


def used_width(attention_mask: np.ndarray) -> int:
    """The columns up to the last one any row's attention_mask uses (at least 1)."""
    used = np.flatnonzero(np.asarray(attention_mask).any(axis=0))
    return int(used[-1]) + 1 if used.size else 1


def bucket_width(used: int, full: int, smallest: int = 32) -> int:
    """The width the TF trainer runs a batch whose rows use `used` columns at: the next power of two
    from `smallest`, at most the arrays' `full` width. XLA compiles once per shape, so a run compiles
    at most log2(full / smallest) + 2 widths (128 tokens: 32, 64, 128), where a multiple of 8
    (trim_padding) would compile up to full / 8."""
    return min(full, max(smallest, 1 << (used - 1).bit_length()))


def zero_padding_outputs(outputs: Mapping[str, np.ndarray], attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per-token outputs with one vector per token ([rows, seq, labels]: a tagger's logits) set to 0
    at padding positions, which hold whatever the model computed there: both trainers return these,
    whatever width they ran (trim_padding)."""
    keep = np.asarray(attention_mask)[:, :, None] != 0
    return {name: np.where(keep, value, 0).astype(value.dtype, copy=False) if value.ndim == 3 else value
            for name, value in outputs.items()}


def example_lengths(arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Tokens per example (attention_mask's row sums), None without an attention_mask."""
    mask = arrays.get("attention_mask")
    return None if mask is None else np.asarray(mask).sum(axis=1)


def eval_shard(num_examples: int, rank: int, world_size: int) -> slice:
    """Contiguous slice of the evaluation set for one process; concatenating shards in rank order
    restores the original order."""
    per = math.ceil(num_examples / world_size)
    return slice(min(rank * per, num_examples), min((rank + 1) * per, num_examples))


class TrainingRun:
    """The bookkeeping both trainers share around their framework-specific steps: the step count,
    the batch plan, the non-finite-loss guard, when to evaluate, and the best evaluation by one
    criterion (never the best F1 and the best EM picked separately).

    processes: the data-parallel workers that split each global batch (DDP processes or TF replicas).
    """

    def __init__(self, config: TrainingConfig, num_examples: int, processes: int,
                 criterion: Callable[[dict], float] | None = None,
                 on_new_best: Callable[[dict], None] | None = None, lengths: np.ndarray | None = None):
        """lengths: tokens per example, which config.group_by_length needs."""
        if config.group_by_length and lengths is None:
            raise ValueError("group_by_length needs the examples' lengths")
        self.lengths = lengths if config.group_by_length else None
        config.check_enough_examples(num_examples, processes)
        config.check_batch_split(processes)
        self.config = config
        self.num_examples = num_examples
        self.processes = processes
        self.steps_per_epoch = config.steps_per_epoch(num_examples, processes)
        self.total_steps = config.total_steps(num_examples, processes)
        self.evaluation_steps = frozenset(config.evaluation_steps(self.steps_per_epoch, self.total_steps))
        self.criterion = criterion
        self.on_new_best = on_new_best
        self.result = FitResult(None, None, [], [])
        self._best_score = -math.inf
        self._nonfinite_run = 0

    def global_batches(self) -> Iterator[np.ndarray]:
        """Each optimizer step's global batch, epoch after epoch, until the last step."""
        step, epoch = 0, 0
        while True:
            for batch in global_batches(self.num_examples, self.config.train_batch_size, self.config.seed, epoch,
                                        self.processes * self.config.gradient_accumulation_steps, self.lengths):
                if step == self.total_steps:
                    return
                step += 1
                yield batch
            epoch += 1

    def check_loss(self, step: int, loss: float) -> bool:
        """Whether optimizer step `step` (1-based) had a finite loss; raises NonFiniteLossError when
        the loss has been NaN/inf for max_consecutive_nonfinite steps in a row."""
        if math.isfinite(loss):
            self._nonfinite_run = 0
            return True
        self._nonfinite_run += 1
        log.warning("non-finite training loss at step %d (%d in a row)", step, self._nonfinite_run)
        if self._nonfinite_run >= self.config.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"training loss was NaN/inf for {self._nonfinite_run} consecutive steps (last at step {step}); "
                f"stopped. The best checkpoint saved so far (step {self.result.best_step}) is kept. "
                "Try a lower learning rate, bf16 instead of fp16, or check the input data.", self.result)
        return False

    def record_loss(self, step: int, loss: float) -> None:
        self.result.losses.append((step, loss))

    def evaluation_due(self, step: int) -> bool:
        return step in self.evaluation_steps

    def record_evaluation(self, step: int, metrics: dict) -> dict:
        """Keep an evaluation; a new best (ties keep the earlier) goes to on_new_best."""
        metrics = dict(metrics, step=step)
        self.result.evaluations.append(metrics)
        score = self.criterion(metrics) if self.criterion else 0.0
        if math.isnan(score):  # never the best, nor worse than any: no best model could be chosen
            raise ValueError(f"the evaluation at step {step} scored NaN ({metrics}): it cannot be ranked")
        if score > self._best_score:
            self._best_score = score
            self.result.best_metrics, self.result.best_step = metrics, step
            if self.on_new_best:
                self.on_new_best(metrics)
        return metrics
