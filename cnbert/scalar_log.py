"""TensorBoard scalars without TensorFlow: event files written with tensorboard's own protobufs and
record writer, which TensorBoard reads as it reads torch's or TensorFlow's.

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
