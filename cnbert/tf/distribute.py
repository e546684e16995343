"""tf.distribute strategies chosen by name."""
from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored")


def use_device(device: str) -> None:
    """Where this process runs: "cpu" hides the GPUs from TensorFlow, "cuda" requires one, "auto"
    leaves TensorFlow's choice (the first GPU when there is one). Call before TensorFlow touches a
    device; raises ValueError when "cuda" is asked for and there is no GPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cuda" and not gpus:
        raise ValueError("device=cuda was asked for, but TensorFlow sees no GPU"
                         + ("" if tf.test.is_built_with_cuda() else ": it is a CPU-only build"))
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")


@functools.lru_cache(maxsize=None)
def make_strategy(name: str) -> tf.distribute.Strategy:
    """one_device: TF's default strategy (the first GPU when there is one, else the CPU; models
    built anywhere work with it). mirrored: one replica per local GPU, or per logical CPU device
    when there is no GPU (tests configure two). multi_worker_mirrored: replicas on every worker
    of the cluster in TF_CONFIG (a single local worker without it).

    One strategy per name and process (later trainers reuse it): strategies number their
    collective groups from the same start, so a second instance over the same devices could
    collide with the first. For the same reason mirrored and multi_worker_mirrored cannot both
    be used in one process."""
    if name == "one_device":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process is the one that writes (checkpoints, summaries, progress)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


@dataclasses.dataclass(frozen=True)
class StrategyContext:
    """A runner's view of its strategy, shaped like cnbert.torch.distributed.DistContext: is_main
    (the chief, the one worker that writes) and world_size (the replicas a global batch is split over)."""

    strategy: tf.distribute.Strategy
    strategy_name: str

    @property
    def is_main(self) -> bool:
        return is_chief(self.strategy)

    @property
    def world_size(self) -> int:
        return self.strategy.num_replicas_in_sync


def init_distributed(strategy_name: str) -> StrategyContext:
    """The strategy of that name (make_strategy's, which Trainer reuses), made now: a multi-worker
    strategy must exist before TensorFlow runs its first op, or its collectives cannot be set up."""
    return StrategyContext(make_strategy(strategy_name), strategy_name)


def _sum_over_workers(context: StrategyContext, value: float) -> float:
    """`value` summed over every replica of every worker (one all-reduce): all workers must call it."""
    strategy = context.strategy
    return float(tf.function(lambda: strategy.reduce(tf.distribute.ReduceOp.SUM,
                                                     strategy.run(lambda: tf.constant(value)), axis=None))())


def any_process(context: StrategyContext, flag: bool) -> bool:
    """Whether `flag` is true in any worker; every worker gets the same answer."""
    if not isinstance(context.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return flag  # one process
    return _sum_over_workers(context, float(flag)) > 0


def barrier(context: StrategyContext) -> None:
    """Return once every worker has called it; a single process has none to wait for."""
    if isinstance(context.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _sum_over_workers(context, 1.0)


def finish(context: StrategyContext) -> None:
    """Wait for every worker before this one exits (the workers leave together, as torch's do)."""
    barrier(context)
