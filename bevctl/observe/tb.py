"""TensorBoard event files written with the `tensorboard` package's own writer and protos (no torch, no
TensorFlow): `tensorboard --logdir runs/` shows every run, scalars under the events.jsonl names."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from bevctl.observe.png import encode_png


class TensorBoardMirror:
    name = "TensorBoard"

    def __init__(self, logdir: Path):
        logdir.mkdir(parents=True, exist_ok=True)
        self.logdir = logdir
        # flush every few seconds: `bevctl tb` and `watch` users look at a run while it trains
        self._writer = EventFileWriter(str(logdir), max_queue_size=64, flush_secs=5)

    def scalars(self, values: dict[str, float], step: int, wall_time: float | None = None) -> None:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self._writer.add_event(event_pb2.Event(wall_time=wall_time or time.time(), step=step, summary=summary))

    def image(self, tag: str, hwc_uint8: Any, step: int) -> None:
        data, height, width = encode_png(hwc_uint8)
        image = summary_pb2.Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
