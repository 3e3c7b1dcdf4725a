"""Names and places of the run contract: file names, statuses, event kinds, the runs root. Stdlib only."""

from __future__ import annotations

import os
from pathlib import Path

SCHEMA_VERSION = 1
MANIFEST = "run.json"
EVENTS = "events.jsonl"
LATEST = "latest.pth"
LOCK = ".lock"  # flock'ed by the run's supervisor for the whole run
CONSOLE = "console.out"  # the trainer's own stdout/stderr (tracebacks land here); not *.log, read as the mmcv log
LOGGER_NAME = "bevctl"

KINDS = (
    "run_start",
    "gca_enabled",
    "checkpoint_loaded",
    "train",
    "val",
    "checkpoint_saved",
    "alert",
    "run_end",
)
# Every status a run can have, and the ones it never leaves. "unreadable" is the listing's word for a run
# directory whose run.json cannot be read; it is never written.
STATUSES = ("created", "running", "finished", "stopped", "failed", "crashed")
FINAL_STATUSES = ("finished", "stopped", "failed", "crashed")
UNREADABLE = "unreadable"
# Keys of a `train` event that are bookkeeping, not metrics (everything else numeric is a metric).
TRAIN_FIELDS = ("epoch", "iter", "iters_per_epoch", "global_step", "lr", "step_time", "data_time", "memory")


def runs_root(default: str | os.PathLike = "runs") -> Path:
    """The folder holding run directories: $BEVCTL_RUNS, else ./runs."""
    return Path(os.environ.get("BEVCTL_RUNS", default))


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch}.pth"
