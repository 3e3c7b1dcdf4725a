"""Where `bevctl watch` finds records: which files of a run folder (ours, the original BEVFusion's, mmdet3d's) or
which single log to follow, and the parsers of the structured formats (text logs: `bevctl.watch.textlog`).

Formats:

- our ``events.jsonl`` (`bevctl.runs`),
- mmcv 1.x ``<ts>.log`` and mmengine ``<ts>.log`` (`textlog.TextLogParser`),
- mmcv 1.x ``<ts>.log.json`` (``mode`` train/val, 5-decimal floats),
- mmengine ``vis_data/scalars.json`` (one JSON object per logged step with ``step``).

When a structured log sits next to a text log, the structured one gives the steps (full precision, no parsing
guesswork) and the text log is read for what only it holds: the checks (GCA counts, checkpoint loading),
iterations per epoch and eta.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bevctl import runs
from bevctl.watch.records import Parser, add_aliases, is_metric, number  # noqa: F401 - re-exported
from bevctl.watch.textlog import TextLogParser

try:  # optional: a faster JSON decoder for long events.jsonl backlogs
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by the no-orjson test
    _orjson = None


def _json_objects(parser: Parser, lines: list[str]):
    """The JSON objects among `lines`; anything else non-blank counts as garbage."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if isinstance(data, dict):
            yield data
        else:
            parser.garbage += 1


class EventsParser(Parser):
    """Our events.jsonl, read through the run contract."""

    name = "events"

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        self.lines += len(lines)
        if len(lines) > 64:
            batch = self._batch(lines)
            if batch is not None:
                return batch
        parse = runs.parse_event
        records = []
        for line in lines:
            event = parse(line)
            if event is None:
                if line.strip():
                    self.garbage += 1
                continue
            records.append(event)
        return records

    @staticmethod
    def _batch(lines: list[str]) -> list[dict[str, Any]] | None:
        """A backlog decoded as one JSON array (faster than line by line; orjson, when installed, faster again but
        it refuses NaN, which a diverging run logs); None when any line is not a JSON value, so the caller goes line
        by line and counts the garbage. Same result as `runs.parse_event`."""
        text = "[" + ",".join(lines) + "]"
        events = None
        if _orjson is not None:
            try:
                events = _orjson.loads(text)
            except ValueError:
                events = None
        if events is None:
            try:
                events = json.loads(text)
            except ValueError:
                return None
        if len(events) != len(lines):
            return None
        for event in events:
            if not isinstance(event, dict) or "kind" not in event:
                return None
        return events


class MmcvJsonParser(Parser):
    """mmcv's `<ts>.log.json`: a first line of runner meta, then `{"mode": "train", ...}` per interval."""

    name = "mmcv-json"

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        out = []
        for data in _json_objects(self, lines):
            mode = data.pop("mode", None)
            if mode == "train":
                data["step_time"] = data.pop("time", None)
                data["kind"] = "train"
                data["time"] = None
                out.append(data)
            elif mode == "val":
                for key in ("time", "data_time", "iter", "lr", "memory"):
                    data.pop(key, None)
                data["kind"] = "val"
                data["time"] = None
                out.append(data)
            # anything else (the runner meta line) is not a step
        self.lines += len(lines)
        return out


class MmengineScalarsParser(Parser):
    """mmengine's `vis_data/scalars.json`: one JSON object per logged step. Train lines carry `epoch`, `iter` and
    `step` (both the global iteration); validation lines have no `lr`/`loss` and `step` is the epoch."""

    name = "mmengine-json"

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        out = []
        for data in _json_objects(self, lines):
            if "lr" in data or "loss" in data:
                data["step_time"] = data.pop("time", None)
                data["kind"] = "train"
                data["time"] = None
                step = data.pop("iter", None)
                data["global_step"] = data.pop("step", step)
            else:
                for key in ("time", "data_time"):
                    data.pop(key, None)
                add_aliases(data)
                data["kind"] = "val"
                data["time"] = None
                data.setdefault("epoch", data.pop("step", None))
            out.append(data)
        self.lines += len(lines)
        return out


# --------------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Pattern:
    """Files of one format inside a folder, found again on every rescan (new files join as they appear)."""

    folder: Path
    glob: str
    make: Callable[[], Parser]
    label: str

    def files(self) -> list[Path]:
        try:
            found = [p for p in self.folder.glob(self.glob) if p.is_file()]
        except OSError:
            return []
        if self.glob == "*.log":  # `x.log.json` does not match `*.log`, but rotated `x.log.1` never should
            found = [p for p in found if p.suffix == ".log"]
        return sorted(found)


def _checks_only() -> TextLogParser:
    return TextLogParser(verification_only=True)


def parser_for_file(path: Path) -> tuple[Callable[[], Parser], str]:
    name = path.name
    if name == runs.EVENTS or name.endswith(".jsonl"):
        return EventsParser, "events"
    if name.endswith(".log.json"):
        return MmcvJsonParser, "mmcv-json"
    if name == "scalars.json" or (path.parent.name == "vis_data" and name.endswith(".json")):
        return MmengineScalarsParser, "mmengine-json"
    return TextLogParser, "text"


def _single_file(path: Path) -> list[Pattern]:
    make, label = parser_for_file(path)
    folder, name = path.parent, path.name
    if label == "text":
        if (folder / (name + ".json")).is_file():  # mmcv writes `<ts>.log.json` beside `<ts>.log`
            return [Pattern(folder, name + ".json", MmcvJsonParser, "mmcv-json"),
                    Pattern(folder, name, _checks_only, "text (checks only)")]
        if (folder / "vis_data" / "scalars.json").is_file():  # mmengine's session folder
            return [Pattern(folder / "vis_data", "scalars.json", MmengineScalarsParser, "mmengine-json"),
                    Pattern(folder, name, _checks_only, "text (checks only)")]
    elif label == "mmcv-json" and (folder / name[: -len(".json")]).is_file():
        return [Pattern(folder, name, make, label), Pattern(folder, name[: -len(".json")], _checks_only,
                                                            "text (checks only)")]
    elif label == "mmengine-json" and folder.name == "vis_data" and any(folder.parent.glob("*.log")):
        return [Pattern(folder, name, make, label), Pattern(folder.parent, "*.log", _checks_only,
                                                            "text (checks only)")]
    return [Pattern(folder, name, make, label)]


def _checkout_run(path: Path) -> bool:
    """A run of the user's own BEVFusion checkout (`trainer:` in run.json's config, bevctl.launchers.checkout):
    bevctl wrote run.json, but the training logs are the checkout's mmcv/mmengine files."""
    config = (runs.read_manifest(path) or {}).get("config")
    return isinstance(config, dict) and bool(config.get("trainer"))


def discover(path: Path) -> list[Pattern]:
    """What to follow for a run directory (ours, the original BEVFusion's, mmdet3d's) or a single log file."""
    if path.is_file():
        return _single_file(path)
    ours = (path / runs.EVENTS).exists() or ((path / runs.MANIFEST).exists() and not _checkout_run(path))
    if ours:
        return [
            Pattern(path, runs.EVENTS, EventsParser, "events"),
            Pattern(path, "*.log", _checks_only, "text (checks only)"),
        ]
    # mmengine: <work_dir>/<timestamp>/<timestamp>.log and .../vis_data/scalars.json; follow the newest session.
    sessions = sorted(p for p in path.glob("*/vis_data") if p.is_dir())
    if (path / "vis_data").is_dir():
        sessions.append(path / "vis_data")
    if sessions:
        session = sessions[-1].parent
        has_text = any(session.glob("*.log"))
        if (session / "vis_data" / "scalars.json").is_file():
            found = [Pattern(session / "vis_data", "scalars.json", MmengineScalarsParser, "mmengine-json")]
            return found + ([Pattern(session, "*.log", _checks_only, "text (checks only)")] if has_text else [])
        if has_text:
            return [Pattern(session, "*.log", TextLogParser, "mmengine text")]
    # mmcv (the original BEVFusion): `<ts>.log.json` has the steps, `<ts>.log` the checks and eta as well.
    has_text = any(p.suffix == ".log" for p in path.glob("*.log"))
    if any(path.glob("*.log.json")):
        found = [Pattern(path, "*.log.json", MmcvJsonParser, "mmcv-json")]
        return found + ([Pattern(path, "*.log", _checks_only, "text (checks only)")] if has_text else [])
    if has_text:
        return [Pattern(path, "*.log", TextLogParser, "mmcv text")]
    # Nothing yet (a run that has not started logging): wait for our files.
    return [
        Pattern(path, runs.EVENTS, EventsParser, "events"),
        Pattern(path, "*.log", TextLogParser, "text"),
    ]
