"""THE run contract (schema version 1): what a run directory holds, written by `model/` and read by `bevctl`.

A run lives in ``<runs root>/<run name>/`` and holds:

``run.json``
    The manifest, rewritten atomically: ``schema``, ``name``, ``phase``, ``config`` (the resolved phase),
    ``command`` (argv list), ``cwd``, ``git_commit``, ``image``, ``container_id``, ``pid``, ``host``, ``where``
    (``local`` | ``container``), ``started_at`` / ``ended_at`` (unix seconds), ``status`` (one of `STATUSES`)
    and ``exit_code``.

``events.jsonl``
    One JSON object per line, appended and flushed per line by rank 0 only. Every event has
    ``schema`` (int), ``time`` (unix seconds, float) and ``kind``; the other fields depend on the kind:

    - ``run_start``: ``phase``, ``world_size``, ``epochs``, ``iters_per_epoch``, ``start_epoch``, ``start_iter``,
      ``precision``, ``model`` (config name), ``gca`` (mode).
    - ``gca_enabled``: ``mode``, ``params`` ({task: count}), ``total``.
    - ``checkpoint_loaded``: ``path``, ``how`` (``load_from`` | ``resume`` | ``pretrained:<module>``),
      ``matched`` (int), ``missing`` / ``unexpected`` / ``mismatched`` (lists of keys), ``missing_globs`` (the
      compressed form, e.g. ``task_gca.object.*``), ``ok`` (bool).
    - ``train``: ``epoch`` (1-based), ``iter`` (1-based within the epoch), ``iters_per_epoch``, ``global_step``,
      ``lr``, ``time`` is the event time, so the step duration is ``step_time``; ``data_time``, ``memory`` (MB),
      ``grad_norm``, ``loss`` and every ``loss/...`` and ``stats/...`` value, flat (``"loss/map/divider/dice": 0.52``).
    - ``val``: ``epoch`` and the metrics flat (``object/map``, ``object/nds``, ``map/<class>/iou@max``,
      ``map/mean/iou@max`` ...).
    - ``checkpoint_saved``: ``path``, ``epoch``, ``iter``, ``global_step``, ``reason`` (``epoch`` | ``signal`` |
      ``nonfinite`` | ``final``).
    - ``alert``: ``level`` (``warning`` | ``error``), ``message``, optional ``metric`` / ``value``.
    - ``run_end``: ``status`` (``finished`` | ``stopped`` | ``failed``), ``exit_code``, ``message``.

    Non-finite floats are written as ``NaN`` / ``Infinity`` (Python's json reads them back). Readers must keep
    fields they do not know and skip (and count) lines that are not JSON objects.

``<YYYYmmdd_HHMMSS>.log``
    The human log in mmcv's style, so ``grep "Task-specific"`` and ``grep loss/map/divider`` keep working:
    ``2026-11-25 09:10:44,756 - bevctl - INFO - Epoch [1][50/3862]\\tlr: 2.000e-04, eta: 1 day, 2:03:04, time: ...``.

``epoch_N.pth`` and ``latest.pth``
    Checkpoints ``{"meta": {...}, "state_dict": ..., "optimizer": ..., ...}`` written atomically; ``latest.pth`` last.

This module is stdlib-only: the CLI host and `bevctl watch` read runs without torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from bevctl.atomic import atomic_write_json

SCHEMA_VERSION = 1
MANIFEST = "run.json"
EVENTS = "events.jsonl"
LATEST = "latest.pth"
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
STATUSES = ("created", "running", "finished", "stopped", "failed", "crashed")
# Keys of a `train` event that are bookkeeping, not metrics (everything else numeric is a metric).
TRAIN_FIELDS = ("epoch", "iter", "iters_per_epoch", "global_step", "lr", "step_time", "data_time", "memory")


def runs_root(default: str | os.PathLike = "runs") -> Path:
    """The folder holding run directories: $BEVCTL_RUNS, else ./runs."""
    return Path(os.environ.get("BEVCTL_RUNS", default))


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch}.pth"


# --------------------------------------------------------------------------------------------- manifest


def new_manifest(name: str, phase: str, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": name,
        "phase": phase,
        "config": config,
        "command": None,
        "cwd": os.getcwd(),
        "git_commit": None,
        "image": None,
        "container_id": None,
        "pid": None,
        "host": socket.gethostname(),
        "where": "local",
        "started_at": time.time(),
        "ended_at": None,
        "status": "created",
        "exit_code": None,
    }
    manifest.update(fields)
    return manifest


def write_manifest(run_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest, or None when the run has none (or it is unreadable: a run dir of another tool)."""
    try:
        with open(Path(run_dir) / MANIFEST, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def update_manifest(run_dir: str | os.PathLike, **changes: Any) -> dict[str, Any]:
    manifest = read_manifest(run_dir) or {"schema": SCHEMA_VERSION, "name": Path(run_dir).name}
    manifest.update(changes)
    write_manifest(run_dir, manifest)
    return manifest


# --------------------------------------------------------------------------------------------- events


class EventWriter:
    """Appends events to events.jsonl, one flushed line each (a crash loses at most the line being written)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(KINDS)}")
        event = {"schema": SCHEMA_VERSION, "time": time.time(), "kind": kind}
        event.update(fields)
        self._file.write(json.dumps(event, default=_jsonable) + "\n")
        self._file.flush()
        return event

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_event(line: str) -> dict[str, Any] | None:
    """One events.jsonl line as a dict, or None for a blank or garbage line."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or "kind" not in event:
        return None
    return event


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete events of a file; a partial last line (being written) is left out."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return [e for e in map(parse_event, text.splitlines()) if e is not None]


def iter_metrics(event: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The numeric metrics of a train/val event: `loss`, `loss/...`, `stats/...`, `grad_norm`, val metrics."""
    skip = set(TRAIN_FIELDS) | {"schema", "time", "kind"}
    for key, value in event.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        yield key, float(value)


# --------------------------------------------------------------------------------------------- human log


def log_timestamp(t: float | None = None) -> str:
    """mmcv's logging timestamp: `2026-11-25 09:10:44,756`."""
    moment = _dt.datetime.fromtimestamp(time.time() if t is None else t)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f",{moment.microsecond // 1000:03d}"


def log_file_name(t: float | None = None) -> str:
    return _dt.datetime.fromtimestamp(time.time() if t is None else t).strftime("%Y%m%d_%H%M%S") + ".log"


def format_eta(seconds: float) -> str:
    """`1 day, 2:03:04` like mmcv (str of a timedelta in whole seconds)."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0
    return str(_dt.timedelta(seconds=int(seconds)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_train_line(
    epoch: int,
    it: int,
    iters_per_epoch: int,
    lr: float,
    eta_seconds: float,
    step_time: float,
    data_time: float,
    memory: int,
    metrics: dict[str, float],
) -> str:
    """mmcv TextLoggerHook's line: model log vars, then `loss`, then `grad_norm`."""
    head = (
        f"Epoch [{epoch}][{it}/{iters_per_epoch}]\tlr: {lr:.3e}, eta: {format_eta(eta_seconds)}, "
        f"time: {step_time:.3f}, data_time: {data_time:.3f}, memory: {int(memory)}"
    )
    ordered = [k for k in metrics if k not in ("loss", "grad_norm")]
    ordered += [k for k in ("loss", "grad_norm") if k in metrics]
    items = ", ".join(f"{k}: {_fmt(metrics[k])}" for k in ordered)
    return f"{head}, {items}" if items else head


def format_val_line(epoch: int, iters: int, metrics: dict[str, float]) -> str:
    items = ", ".join(f"{k}: {_fmt(v)}" for k, v in metrics.items())
    return f"Epoch(val) [{epoch}][{iters}]\t{items}"


class TextLog:
    """The human log: `<timestamp> - bevctl - LEVEL - message`, flushed per line."""

    def __init__(self, path: str | os.PathLike, echo: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)
        self.echo = echo

    def write(self, message: str, level: str = "INFO") -> None:
        for line in message.splitlines() or [""]:
            text = f"{log_timestamp()} - {LOGGER_NAME} - {level} - {line}"
            self._file.write(text + "\n")
            if self.echo:
                print(text, flush=True)
        self._file.flush()

    def info(self, message: str) -> None:
        self.write(message, "INFO")

    def warning(self, message: str) -> None:
        self.write(message, "WARNING")

    def error(self, message: str) -> None:
        self.write(message, "ERROR")

    def close(self) -> None:
        self._file.close()


# --------------------------------------------------------------------------------------------- run listing


def list_run_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Run directories under root (those with run.json or events.jsonl), newest first."""
    base = Path(root) if root is not None else runs_root()
    if not base.is_dir():
        return []
    found = [d for d in base.iterdir() if d.is_dir() and ((d / MANIFEST).exists() or (d / EVENTS).exists())]
    return sorted(found, key=_started, reverse=True)


def _started(run_dir: Path) -> float:
    manifest = read_manifest(run_dir)
    if manifest and isinstance(manifest.get("started_at"), (int, float)):
        return float(manifest["started_at"])
    try:
        return (run_dir / EVENTS).stat().st_mtime
    except OSError:
        return run_dir.stat().st_mtime


def compress_keys(keys: Iterable[str], depth: int = 2) -> list[str]:
    """Group keys into `prefix.*` globs at the given depth, as the seed's log shows them: `task_gca.object.*`."""
    globs: dict[str, None] = {}
    for key in keys:
        parts = key.split(".")
        globs[".".join(parts[:depth]) + ".*" if len(parts) > depth else key] = None
    return list(globs)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
