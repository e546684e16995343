"""What both trainers show of a run as it goes (StepLog: a progress bar and TensorBoard scalars), and
the TensorBoard scalars without TensorFlow (ScalarWriter): event files written with tensorboard's own
protobufs and record writer, which TensorBoard reads as it reads torch's or TensorFlow's.

torch.utils.tensorboard reaches its file I/O through `tensorboard.compat.tf`, which imports
TensorFlow when it is installed (seconds and hundreds of MB for a PyTorch run), and the usual way
to stop that (a `tensorboard.compat.notf` module) would make every later TensorFlow summary in the
process fail. This writer imports neither.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter
from tqdm.auto import tqdm


class ScalarWriter:
    """Appends scalar events to a new events.out.tfevents.* file in `log_dir` (created if needed)."""

    def __init__(self, log_dir):
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}"
        self._file = open(self.path, "wb")
        self._records = RecordWriter(self._file)
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._write(Event(wall_time=time.time(), step=int(step),
                          summary=Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])))

    def _write(self, event: Event) -> None:
        self._records.write(event.SerializeToString())
        self._file.flush()  # TensorBoard reads a running job's file as it grows

    def close(self) -> None:
        self._file.close()


class StepLog:
    """A training loop's progress bar (loss and learning rate) and, with a log_dir, its TensorBoard
    scalars: train/loss and train/learning_rate at step 1 and every logging_steps steps,
    eval/<name> for each number an evaluation returns. Only the main process should pass a
    log_dir and show_progress."""

    def __init__(self, total_steps: int, logging_steps: int, log_dir=None, show_progress: bool = True):
        self.logging_steps = logging_steps
        self.writer = ScalarWriter(log_dir) if log_dir else None
        self.progress = tqdm(total=total_steps, desc="train", disable=not show_progress, dynamic_ncols=True)

    def step(self, step: int, loss: float, learning_rate: float) -> None:
        """After optimizer step `step` (from 1), which used `learning_rate`."""
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{loss:.4f}", lr=f"{learning_rate:.2e}")
        if self.writer and (step % self.logging_steps == 0 or step == 1):
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/learning_rate", learning_rate, step)

    def evaluation(self, step: int, metrics: dict) -> None:
        if self.writer:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"eval/{name}", value, step)

    def close(self) -> None:
        self.progress.close()
        if self.writer:
            self.writer.close()
