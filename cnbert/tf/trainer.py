"""The TensorFlow training loop, with the semantics of cnbert.torch.trainer: the same batch plan
(cnbert.training), loss normalisation, AdamW + schedule + global-norm clipping, non-finite-loss
guard, best-evaluation choice, TensorBoard and progress bar.

How it maps onto tf.distribute: each replica is one "process" of the batch plan (its rank is the
replica id), so a global batch is split over replicas and accumulation micro-steps exactly as the
PyTorch trainer splits it over processes. Micro-batches are padded to one fixed size with
zero-weight rows, so that XLA, which compiles per shape, compiles the training step once per
width: one width for span models; for classifiers and taggers, whose losses read no padding,
each step runs only as wide as its longest example needs, rounded up to a power of two
(cnbert.training.bucket_width), so a run compiles a few widths instead of one per length.
Per-replica gradients are summed with one all-reduce before the optimizer clips and applies them.

Under a mirrored strategy the trainer trains a copy of the model built under the strategy's
scope (Keras variables cannot be re-homed); the caller's model receives the trained weights
before every on_new_best call and at the end of fit, as the PyTorch model is trained in place.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from cnbert.data.labels import check_labels
from cnbert.data.mrc_examples import ANSWER_CLASSES
from cnbert.scalar_log import StepLog
from cnbert.tasks import HEAD_LABELS, TASK_HEADS, trims_padding
from cnbert.tf.distribute import is_chief, make_strategy
from cnbert.tf.heads import TASK_MODELS, task_loss
from cnbert.tf.modeling import set_gradient_checkpointing, set_precision
from cnbert.tf.optim import build_optimizer
from cnbert.training import (TOKEN_ARRAYS, FitResult, TrainingConfig, TrainingRun, bucket_width, example_lengths,
                             micro_batches, used_width, zero_padding_outputs)

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
TOKEN_LABEL_NAMES = ("tags",)  # labels with one value per token, [features, seq]


class Trainer:
    """Trains a task model (cnbert.tf.heads) on numpy feature arrays.

    task: "cmrc2018", "drcd", "cjrc", a classification task (cnbert.tasks.classification.TASKS) or
    an NER task (cnbert.tasks.ner.TASKS); it chooses the loss and the label arrays. strategy_name:
    "one_device", "mirrored" or "multi_worker_mirrored". jit_compile: compile the training and
    prediction steps with XLA (one replica, or replicas on GPUs); the attribute `jit_compile` is
    the setting in effect, which fit logs. XLA draws other dropout masks than non-XLA code for the
    same seed, so a seeded run is reproduced only with the same setting in effect.

    The model's dense layers are switched to training_config.precision (Keras mixed-precision
    policies; variables stay float32) and stay so after training: `set_precision(model, "fp32")`
    switches them back. Its encoder recomputes layers in the backward pass when
    training_config.gradient_checkpointing is set.

    trim_padding (default: for classifiers and taggers, whose losses read no padding position):
    run each training step, and each prediction batch (rows sorted by length), at the bucket
    width of its longest row (cnbert.training.bucket_width) instead of the arrays' full width.
    """

    def __init__(self, model: keras.Model, training_config: TrainingConfig, task: str,
                 strategy_name: str = "one_device", log_dir=None, show_progress: bool = True,
                 jit_compile: bool = True, trim_padding: bool | None = None):
        if task not in TASK_MODELS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_MODELS)}")
        if not isinstance(model, TASK_MODELS[task]):
            raise TypeError(f"task {task!r} needs a {TASK_MODELS[task].__name__}, got {type(model).__name__}")
        self.model = model
        self.config = training_config
        self.task = task
        self.label_names = HEAD_LABELS[TASK_HEADS[task]]
        self.trim_padding = trims_padding(task, trim_padding)
        self.strategy = make_strategy(strategy_name)
        self.distributed = strategy_name != "one_device"
        self.replicas = self.strategy.num_replicas_in_sync
        self.is_chief = is_chief(self.strategy)
        self.log_dir = log_dir
        self.show_progress = show_progress and self.is_chief
        # XLA places a compiled function on the first CPU, so replicas on other (logical) CPU
        # devices cannot run it; replicas on GPUs can.
        self.jit_compile = jit_compile and (self.replicas == 1 or bool(tf.config.list_logical_devices("GPU")))
        self._configure(model)
        if self.distributed:
            with self.strategy.scope():
                self._model = model.same_architecture()
            self._configure(self._model)
        else:
            self._model = model
        self._predict_step = None
        self._fitting = False  # during fit the replicated copy, not the caller's model, is current

    def _configure(self, model: keras.Model) -> None:
        set_precision(model, self.config.precision)
        set_gradient_checkpointing(model, self.config.gradient_checkpointing)

    # ---- weights between the caller's model and the replicated copy ---------------------------

    def _copy_weights(self, source: keras.Model, target: keras.Model) -> None:
        if source is target:
            return
        for src, dst in zip(source.weights, target.weights, strict=True):
            if src.path != dst.path:
                raise AssertionError(f"model copies disagree: {src.path} vs {dst.path}")
            dst.assign(src.value)

    # ---- training -----------------------------------------------------------------------------

    def fit(self, train: Mapping[str, np.ndarray], evaluate: Callable[[], dict] | None = None,
            criterion: Callable[[dict], float] | None = None,
            on_new_best: Callable[[dict], None] | None = None) -> FitResult:
        """Train for config.num_train_epochs. `evaluate()` runs on every worker and returns the
        same metrics everywhere; the best evaluation is the one with the highest `criterion`
        (ties keep the earlier); `on_new_best(metrics)` runs on the chief only, after the
        caller's model has received the current weights."""
        cfg, replicas = self.config, self.replicas
        arrays = self._checked_arrays(train, INPUT_NAMES + self.label_names)
        accum = cfg.gradient_accumulation_steps

        def save_best(metrics):
            self._copy_weights(self._model, self.model)  # the caller saves its own model object
            on_new_best(metrics)

        run = TrainingRun(cfg, len(arrays["input_ids"]), replicas, criterion,
                          save_best if on_new_best and self.is_chief else None, lengths=example_lengths(arrays))
        total_steps = run.total_steps
        micro_size = math.ceil(math.ceil(cfg.train_batch_size / replicas) / accum)

        log.info("training %d steps with jit_compile=%s (dropout masks depend on it)", total_steps, self.jit_compile)
        self._copy_weights(self.model, self._model)
        self._fitting = True
        with self.strategy.scope():
            # Set before each step from the trainer's step count (as torch's LambdaLR follows it),
            # not the optimizer's, which does not advance on steps skipped for a non-finite loss.
            learning_rate = tf.Variable(0.0, trainable=False, name="learning_rate")
            optimizer = build_optimizer(cfg, self._model.trainable_variables, lambda: learning_rate)
        grad_step, apply_step = self._compile_train_step(optimizer, accum)

        step_log = StepLog(total_steps, cfg.logging_steps, self.log_dir if self.is_chief else None, self.show_progress)
        try:
            for step, batch_index in enumerate(run.global_batches(), start=1):
                batch, weights, seeds = self._replica_inputs(arrays, batch_index, step - 1, micro_size)
                loss_sum, grads = grad_step(batch, weights, seeds, tf.constant(len(batch_index), tf.float32))
                loss_value = float(loss_sum) / len(batch_index)
                run.record_loss(step, loss_value)  # first: the step that stops a diverged run is logged too
                # with fp16 the loss-scale optimizer skips a non-finite step itself and lowers the scale
                lr = cfg.learning_rate * cfg.lr_multiplier(step - 1, total_steps)  # the rate this step uses
                if run.check_loss(step, loss_value) or cfg.precision == "fp16":
                    learning_rate.assign(lr)
                    apply_step(grads)
                step_log.step(step, loss_value, lr)
                if evaluate and run.evaluation_due(step):
                    metrics = evaluate()
                    step_log.evaluation(step, metrics)
                    run.record_evaluation(step, metrics)
        finally:
            self._fitting = False
            step_log.close()
            self._copy_weights(self._model, self.model)
        return run.result

    def _width(self, attention_mask: np.ndarray) -> int:
        """The columns a batch with this attention_mask runs at (all of them unless trimming)."""
        full = attention_mask.shape[1]
        return bucket_width(used_width(attention_mask), full) if self.trim_padding else full

    def _replica_inputs(self, arrays, batch_index, step: int, micro_size: int):
        """Per-replica [accum, micro_size, ...] arrays of this step's micro-batches (zero rows of
        weight 0 fill short ones), their weights, and one dropout seed per micro-batch. Every
        replica and micro-step of a step runs at the same width (_width of the whole step)."""
        accum, replicas = self.config.gradient_accumulation_steps, self.replicas
        width = self._width(arrays["attention_mask"][batch_index])
        arrays = {name: array[:, :width] if name in TOKEN_ARRAYS else array  # views, not copies
                  for name, array in arrays.items()}

        def for_replica(rank):
            batch = {name: np.zeros((accum, micro_size) + arrays[name].shape[1:], arrays[name].dtype) for name in arrays}
            weights = np.zeros((accum, micro_size), np.float32)
            for i, index in enumerate(micro_batches(batch_index, rank, replicas, accum)):
                for name, array in arrays.items():
                    batch[name][i, :len(index)] = array[index]
                weights[i, :len(index)] = 1.0
            seeds = np.array([[self.config.seed, (step * replicas + rank) * accum + i] for i in range(accum)], np.int64)
            return batch, weights, seeds

        if not self.distributed:
            return for_replica(0)
        parts = {}

        def component(context, which):
            rank = context.replica_id_in_sync_group
            if rank not in parts:
                parts[rank] = for_replica(rank)
            return parts[rank][which]

        return tuple(self.strategy.experimental_distribute_values_from_function(
            lambda context, which=which: component(context, which)) for which in range(3))

    def _compile_train_step(self, optimizer, accum: int):
        model, task, strategy = self._model, self.task, self.strategy
        variables = model.trainable_variables
        fp16 = self.config.precision == "fp16"
        all_reduce = self.replicas > 1

        def micro_step(batch, weights, seed, global_batch_size):
            with tf.GradientTape() as tape:
                outputs = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"], training=True, dropout_seed=seed)
                loss_sum = tf.reduce_sum(task_loss(task, outputs, batch, "none") * weights)
                # sum / global batch: summed over micro-steps and replicas this is the global mean
                loss = loss_sum / global_batch_size
                if fp16:
                    loss = optimizer.scale_loss(loss)
            grads = tape.gradient(loss, variables)
            return loss_sum, [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]

        @tf.function(jit_compile=self.jit_compile)
        def accumulate(batch, weights, seeds, global_batch_size):
            if accum == 1:
                return micro_step({name: values[0] for name, values in batch.items()}, weights[0], seeds[0],
                                  global_batch_size)
            # One loop body, so the model is traced (and compiled) once whatever the accumulation.
            loss_sum, grads = tf.zeros([]), [tf.zeros(v.shape, tf.float32) for v in variables]
            for i in tf.range(accum):
                micro = {name: values[i] for name, values in batch.items()}
                more_loss, more_grads = micro_step(micro, weights[i], seeds[i], global_batch_size)
                loss_sum += more_loss
                grads = [g + h for g, h in zip(grads, more_grads)]
            return loss_sum, grads

        @tf.function
        def grad_step(batch, weights, seeds, global_batch_size):
            def replica_step(batch, weights, seeds):
                loss_sum, grads = accumulate(batch, weights, seeds, global_batch_size)
                if all_reduce:
                    grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
                return loss_sum, grads

            loss_sums, grads = strategy.run(replica_step, args=(batch, weights, seeds))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sums, axis=None), grads

        # The optimizer's cross-replica update (merge_call) cannot be compiled; one replica's can.
        @tf.function(jit_compile=self.jit_compile and not self.distributed)
        def apply_step(grads):
            strategy.run(optimizer.apply, args=(grads,))

        return grad_step, apply_step

    # ---- prediction ---------------------------------------------------------------------------

    def predict(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model outputs (float32 numpy) for every row of `arrays`, in order: "start_logits",
        "end_logits" and, for CJRC, "class_logits"; a classifier's or tagger's "logits", the
        tagger's 0 at padding positions, as the PyTorch trainer returns them. Each replica runs
        eval_batch_size rows per step (the last step is padded, so prediction compiles once per
        width). With trim_padding the rows run shortest first, each step at its bucket width, and
        come back in their order."""
        inputs = self._checked_arrays(arrays, INPUT_NAMES)
        num_rows, full = inputs["input_ids"].shape
        if num_rows == 0:
            raise ValueError("predict() got no rows")
        if not self._fitting:  # the caller may have changed its model's weights since
            self._copy_weights(self.model, self._model)
        per_replica, replicas = self.config.eval_batch_size, self.replicas
        chunk = per_replica * replicas
        step = self._compiled_predict_step()
        order = np.arange(num_rows)
        if self.trim_padding:
            order = np.argsort(inputs["attention_mask"].sum(axis=1), kind="stable")
        pieces: dict[str, list[np.ndarray]] = {}
        for start in range(0, num_rows, chunk):
            index = order[start:start + chunk]
            rows, width = len(index), self._width(inputs["attention_mask"][index])
            padded = {name: np.zeros((chunk, width), a.dtype) for name, a in inputs.items()}
            for name, array in inputs.items():
                padded[name][:rows] = array[index, :width]
            if self.distributed:
                batch = self.strategy.experimental_distribute_values_from_function(
                    lambda context: {name: a[context.replica_id_in_sync_group * per_replica:][:per_replica]
                                     for name, a in padded.items()})
            else:
                batch = padded
            for key, value in step(batch).items():
                value = value.numpy()[:rows]
                if value.ndim == 3 and width < full:  # a trimmed tagger's: the cut columns back
                    value = np.pad(value, ((0, 0), (0, full - width), (0, 0)))
                pieces.setdefault(key, []).append(value)
        unsort = np.argsort(order, kind="stable")
        outputs = {key: np.concatenate(parts)[unsort].astype(np.float32, copy=False) for key, parts in pieces.items()}
        return zero_padding_outputs(outputs, inputs["attention_mask"])

    def _compiled_predict_step(self):
        if self._predict_step is None:
            model, strategy, distributed = self._model, self.strategy, self.distributed

            @tf.function(jit_compile=self.jit_compile)
            def forward(batch):
                return model(batch["input_ids"], attention_mask=batch["attention_mask"],
                             token_type_ids=batch["token_type_ids"], training=False)

            @tf.function
            def predict_step(batch):
                outputs = strategy.run(forward, args=(batch,))
                if distributed:  # every replica's rows, in replica order, on every worker
                    return {key: strategy.gather(value, axis=0) for key, value in outputs.items()}
                return outputs

            self._predict_step = predict_step
        return self._predict_step

    # ---- input checks -------------------------------------------------------------------------

    def _checked_arrays(self, arrays: Mapping[str, np.ndarray], names) -> dict[str, np.ndarray]:
        """The named arrays as int32, after checking presence, shapes and label ranges."""
        missing = [name for name in names if name not in arrays]
        if missing:
            raise ValueError(f"feature arrays lack {missing} (have {sorted(arrays)})")
        checked = {name: np.asarray(arrays[name]) for name in names}
        input_ids = checked["input_ids"]
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [features, seq], got shape {input_ids.shape}")
        for name, array in checked.items():
            want = input_ids.shape if name in INPUT_NAMES + TOKEN_LABEL_NAMES else input_ids.shape[:1]
            if array.shape != want:
                raise ValueError(f"{name} has shape {array.shape}, expected {want}")
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{name} must hold integers, got {array.dtype}")
        for name in ("start_positions", "end_positions"):
            if name in checked:
                check_labels(name, checked[name], input_ids.shape[1])
        if "answer_class" in checked:
            check_labels("answer_class", checked["answer_class"], len(ANSWER_CLASSES))
        for name in ("labels", "tags"):
            if name in checked:
                check_labels(name, checked[name], len(self.model.labels))
        return {name: array.astype(np.int32, copy=False) for name, array in checked.items()}
