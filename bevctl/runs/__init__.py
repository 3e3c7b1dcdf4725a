"""THE run contract (schema version 1): what a run directory holds, written by `model/` and read by `bevctl`.

A run lives in ``<runs root>/<run name>/`` (the name is one safe path component) and holds:

``run.json``
    The manifest (`RunManifest`), written atomically and updated under an flock of the run directory: ``schema``, ``name``,
    ``phase``, ``config`` (the resolved phase), ``command`` (argv list), ``cwd``, ``git_commit``, ``image``,
    ``container_id``, ``pid``, ``host``, ``where`` (``local`` | ``container``), ``started_at`` / ``ended_at``
    (unix seconds), ``status`` (one of `STATUSES`) and ``exit_code``. Optional: ``supervisor`` (``pid``,
    ``start_time``, ``cmdline``: the identity `bevctl stop` checks before it signals), ``trainer_pid`` and ``trainer``
    (the identity of the process the supervisor started, or of a trainer started by hand: what `bevctl stop` signals
    when no supervisor is alive), ``job_id``
    (Slurm), ``launcher``, ``resumed_from`` (a checkpoint outside the runs folder this run started from),
    ``saved_checkpoints`` (file names this run wrote: pruning deletes no other), ``previous_attempts``.

``.lock``
    `flock`'ed by the run's supervisor for the whole run (`RunLock`), or by a trainer started by hand: one trainer
    per run.

``events.jsonl``
    One JSON object per line, appended and flushed per line by rank 0 only. Every event has
    ``schema`` (int), ``time`` (unix seconds, float) and ``kind``; the other fields depend on the kind (one model
    per kind in `bevctl.runs.models`):

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

A run's status is decided in one place, `run_status(run_dir) -> RunStatus` (status, alive, reason, exit_code).

The plain-dict readers and writers here are stdlib-only (the CLI host and `bevctl watch` read runs without torch
or pydantic); the typed models (`RunManifest`, the event models, `load_manifest`, `read_typed_events`) import
pydantic when first used.
"""

from __future__ import annotations

from typing import Any

from bevctl.runs.claim import busy_error, claim_run_dir, create_run_dir
from bevctl.runs.events import (
    EventWriter,
    compress_keys,
    iter_metrics,
    parse_event,
    read_events,
    read_typed_events,
    tail_events,
)
from bevctl.runs.layout import (
    CONSOLE,
    EVENTS,
    FINAL_STATUSES,
    KINDS,
    LATEST,
    LOCK,
    LOGGER_NAME,
    MANIFEST,
    SCHEMA_VERSION,
    STATUSES,
    TRAIN_FIELDS,
    UNREADABLE,
    checkpoint_name,
    runs_root,
)
from bevctl.runs.listing import list_run_dirs, list_runs
from bevctl.runs.lock import RunLock, RunLocked, hold_for_trainer, lock_held
from bevctl.runs.manifest import (
    ManifestUnreadable,
    forget_saved_checkpoints,
    load_manifest,
    new_manifest,
    read_manifest,
    record_saved_checkpoint,
    update_manifest,
    write_manifest,
)
from bevctl.runs.process import identity_matches, pid_alive, process_identity
from bevctl.runs.status import RunStatus, describe_run, last_log_lines, run_status
from bevctl.runs.textlog import (
    TextLog,
    format_eta,
    format_train_line,
    format_val_line,
    log_file_name,
    log_timestamp,
)

_MODELS = ("RunManifest", "ProcessIdentity", "Event", "RunStart", "GcaEnabled", "CheckpointLoaded", "Train", "Val",
           "CheckpointSaved", "Alert", "RunEnd", "EVENT_MODELS", "event_model")


def __getattr__(name: str) -> Any:
    # The pydantic models load on first use, so `bevctl watch` (plain-dict readers) does not import pydantic.
    if name in _MODELS:
        from bevctl.runs import models

        return getattr(models, name)
    raise AttributeError(f"module 'bevctl.runs' has no attribute {name!r}")


__all__ = [
    "CONSOLE", "EVENTS", "FINAL_STATUSES", "KINDS", "LATEST", "LOCK", "LOGGER_NAME", "MANIFEST", "SCHEMA_VERSION",
    "STATUSES", "TRAIN_FIELDS", "UNREADABLE", "EventWriter", "ManifestUnreadable", "RunLock", "RunLocked",
    "RunStatus", "busy_error", "checkpoint_name", "claim_run_dir", "create_run_dir", "compress_keys", "describe_run", "forget_saved_checkpoints", "identity_matches",
    "hold_for_trainer", "iter_metrics", "last_log_lines", "list_run_dirs", "list_runs", "load_manifest", "lock_held", "new_manifest",
    "parse_event", "pid_alive", "process_identity", "read_events", "read_manifest", "read_typed_events",
    "record_saved_checkpoint", "run_status", "runs_root", "tail_events", "update_manifest", "write_manifest",
    "TextLog", "format_eta", "format_train_line", "format_val_line", "log_file_name", "log_timestamp", *_MODELS,
]
