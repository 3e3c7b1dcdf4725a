"""Where a training run's output goes: events, the mmcv-style text log and run.json, through `bevctl.runs`.

Rank 0 writes; on every other rank each call is a no-op, so the trainer calls the sink unconditionally. Every event
dict of a run passes through `RunSink.emit`, and every evaluation through `RunSink.val` (which also receives the
first validation sample's prediction and ground truth): mirrors (TensorBoard, W&B) and images hook in there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bevctl import runs

if TYPE_CHECKING:
    from model.evaluate import Evaluation


class RunSink:
    """Events, text log and run.json, written by rank 0 only."""

    def __init__(self, run_dir: Path, main: bool, echo: bool = True):
        self.run_dir = Path(run_dir)
        self.main = main
        self.events = runs.EventWriter(self.run_dir / runs.EVENTS) if main else None
        self.log = runs.TextLog(self.run_dir / runs.log_file_name(), echo=echo) if main else None
        self.mirrors: Any = None  # TensorBoard / W&B (bevctl.observe), opened with the run's start

    def emit(self, kind: str, **fields: Any) -> None:
        """The one place an event is written."""
        if self.events:
            event = self.events.emit(kind, **fields)
            if kind == "run_start" and self.mirrors is None:
                from bevctl.observe import open_mirrors

                config = (runs.read_manifest(self.run_dir) or {}).get("config")
                self.mirrors = open_mirrors(self.run_dir, config, warn=self.warning)
            if self.mirrors is not None:
                self.mirrors.record(event)  # the same dict, so TensorBoard/W&B names match events.jsonl

    def val(self, epoch: int, evaluation: "Evaluation") -> None:
        """An evaluation's metrics as a `val` event and an `Epoch(val)` line.

        `evaluation.first_sample` holds the first validation sample's prediction and ground truth (rank 0).
        """
        self.emit("val", epoch=epoch, **evaluation.metrics)
        self.info(runs.format_val_line(epoch, evaluation.batches, evaluation.metrics))
        sample = evaluation.first_sample
        if self.mirrors is not None and self.mirrors.targets and "masks_bev" in sample:
            from bevctl.observe.images import bev_maps_image

            gt = sample.get("gt_masks_bev")
            try:
                image = bev_maps_image(sample["masks_bev"].numpy(), gt.numpy() if gt is not None else None)
            except (ValueError, TypeError) as exc:  # an odd sample must not end the run
                self.warning(f"BEV map image not logged: {exc}")
            else:
                self.mirrors.image("val/bev_map (prediction | ground truth)", image)

    def info(self, message: str) -> None:
        if self.log:
            self.log.info(message)

    def warning(self, message: str) -> None:
        if self.log:
            self.log.warning(message)

    def error(self, message: str) -> None:
        if self.log:
            self.log.error(message)

    def manifest(self, **changes: Any) -> None:
        if self.main:
            runs.update_manifest(self.run_dir, **changes)

    def end(self, status: str, exit_code: int, message: str) -> None:
        if not self.main:
            return
        self.emit("run_end", status=status, exit_code=exit_code, message=message)
        self.manifest(status=status, exit_code=exit_code, ended_at=time.time())

    def close(self) -> None:
        if self.mirrors is not None:
            self.mirrors.close()
        for f in (self.events, self.log):
            if f:
                f.close()


def late_sink(run_dir: Path, rank: int) -> RunSink | None:
    """A sink for failures before the normal one exists (a bad run.json), when the run dir is there."""
    if rank != 0 or not Path(run_dir).is_dir():
        return None
    try:
        return RunSink(run_dir, main=True, echo=False)
    except OSError:
        return None
