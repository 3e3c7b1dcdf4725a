"""events.jsonl: the writer (one flushed line per event, checked against its kind's model) and the readers.

`parse_event` / `read_events` return plain dicts and import nothing beyond the standard library: `bevctl watch`
reads long backlogs through them. `read_typed_events` returns the kinds' models.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from bevctl.runs.layout import KINDS, SCHEMA_VERSION, TRAIN_FIELDS

if TYPE_CHECKING:
    from bevctl.runs.models import Event


class EventWriter:
    """Appends events to events.jsonl, one flushed line each (a crash loses at most the line being written)."""

    def __init__(self, path: str | os.PathLike):
        from bevctl.runs import models  # pydantic: only writers (the trainer) pay for it

        self._models = models
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one event of `kind`; its fields are checked against the kind's model (ValueError when wrong)."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(KINDS)}")
        raw = {"schema": SCHEMA_VERSION, "time": time.time(), "kind": kind}
        raw.update({k: _plain(v) for k, v in fields.items()})
        event = self._models.EVENT_MODELS[kind].model_validate(raw)
        return self.write(event)

    def write(self, event: "Event") -> dict[str, Any]:
        data = event.model_dump(mode="python", by_alias=True, exclude_unset=True)
        data = {"schema": event.schema_, "time": event.time, "kind": event.kind, **data}
        self._file.write(json.dumps(data, default=_jsonable) + "\n")
        self._file.flush()
        return data

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


def read_typed_events(path: str | os.PathLike) -> tuple[list["Event"], int]:
    """(events as their kinds' models, number of lines skipped): garbage lines and events whose declared fields do
    not fit their kind are skipped and counted; unknown fields are kept."""
    from pydantic import ValidationError

    from bevctl.runs.models import event_model

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return [], 0
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    events, skipped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        raw = parse_event(line)
        if raw is None:
            skipped += 1
            continue
        try:
            events.append(event_model(raw))
        except ValidationError:
            skipped += 1
    return events, skipped


def tail_events(path: str | os.PathLike, chunk: int = 256 * 1024) -> tuple[dict, dict, dict]:
    """The last train, run_end and checkpoint_saved events of the current attempt, reading only the file's end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chunk))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return {}, {}, {}
    last_train: dict = {}
    run_end: dict = {}
    last_ckpt: dict = {}
    for line in text.splitlines():
        event = parse_event(line)
        if not event:
            continue
        kind = event.get("kind")
        if kind == "train":
            last_train = event
        elif kind == "run_end":
            run_end = event
        elif kind == "checkpoint_saved":
            last_ckpt = event
        elif kind == "run_start":
            run_end = {}
    return last_train, run_end, last_ckpt


def iter_metrics(event: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The numeric metrics of a train/val event: `loss`, `loss/...`, `stats/...`, `grad_norm`, val metrics."""
    skip = set(TRAIN_FIELDS) | {"schema", "time", "kind"}
    for key, value in event.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        yield key, float(value)


def compress_keys(keys: Any, depth: int = 2) -> list[str]:
    """Group keys into `prefix.*` globs at the given depth, as the seed's log shows them: `task_gca.object.*`."""
    globs: dict[str, None] = {}
    for key in keys:
        parts = key.split(".")
        globs[".".join(parts[:depth]) + ".*" if len(parts) > depth else key] = None
    return list(globs)


def _plain(value: Any) -> Any:
    # numpy / torch scalars become Python numbers before validation (a float32 is no float to pydantic)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
