"""Log formats `bevctl watch` reads, each turned into records shaped like our events (`bevctl.runs`).

A record is a dict with a ``kind`` (``train``, ``val``, ``gca_enabled``, ``checkpoint_loaded``, ``run_start``,
``run_end``, ``alert`` ... plus ``checkpoint_missing`` for key lines found in text logs) and the fields of that kind.
Train records use our names whatever the source: ``time`` is when the line was logged (None when unknown),
``step_time`` the seconds per iteration (mmcv's and mmengine's ``time``), and every other number is a metric.
Values parsed from text stay strings until a chart or a check needs them: converting all of them would make
ingesting a long log several times slower, and most are never looked at.

Formats:

- our ``events.jsonl`` (`bevctl.runs.parse_event`),
- mmcv 1.x text logs ``<ts>.log``: ``2022-10-17 18:10:44,756 - mmdet3d - INFO - Epoch [1][1850/2575]\\tlr: ...``,
  ``Epoch(val) [E][N]\\t...`` and the lines of the seed's checks (GCA parameter counts, checkpoint loading),
- mmcv 1.x ``<ts>.log.json`` (``mode`` train/val, 5-decimal floats),
- mmengine text logs ``2025/04/09 13:17:08 - mmengine - INFO - Epoch(train)  [5][5550/7724]  lr: ...`` (fields
  separated by two spaces) and ``vis_data/scalars.json`` (one JSON object per logged step with ``step``).
"""

from __future__ import annotations

import json
import re
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bevctl import runs

try:  # optional: a faster JSON decoder for long events.jsonl backlogs
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by the no-orjson test
    _orjson = None

# Record fields that describe a step rather than measure the model.
BOOKKEEPING = frozenset(runs.TRAIN_FIELDS) | {"schema", "time", "kind", "eta", "mode", "step", "_from"}

# mmengine names its NuScenes metrics differently; alias the headline ones so panels and bands find them.
_MMENGINE_ALIASES = {
    "NuScenes metric/pred_instances_3d_NuScenes/mAP": "object/map",
    "NuScenes metric/pred_instances_3d_NuScenes/NDS": "object/nds",
}


def is_metric(key: str) -> bool:
    return key not in BOOKKEEPING


def number(value: Any) -> float | None:
    """A record value as a float (text logs keep strings), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class Parser:
    """Turns complete lines of one file into records; counts lines it could not read (`garbage`)."""

    name = "base"

    def __init__(self) -> None:
        self.lines = 0
        self.garbage = 0

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _json_objects(self, lines: list[str]):
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
                self.garbage += 1


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
        """A backlog decoded as one JSON array (a fifth faster than line by line; orjson, when installed, is 1.6x
        faster again but refuses NaN, which a diverging run logs); None when any line is not a JSON value, so the
        caller goes line by line and counts the garbage. Same result as `runs.parse_event`."""
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


# --------------------------------------------------------------------------------------------- text logs

# `2022-10-17 18:10:44,756 - mmdet3d - INFO - msg` (mmcv) and `2025/04/09 13:17:08 - mmengine - INFO - msg`.
_MMCV_HEAD = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d):(\d\d),(\d{3}) - \S+ - [A-Z]+ - ")
_MMENGINE_HEAD = re.compile(r"(\d{4}/\d\d/\d\d \d\d:\d\d):(\d\d) - \S+ - [A-Z]+ - ")
_MMCV_TRAIN = re.compile(r"Epoch \[(\d+)\]\[(\d+)/(\d+)\]\s+")
_MMCV_VAL = re.compile(r"Epoch\(val\) \[(\d+)\]\[(\d+)\]\s+")
_MMENGINE_STEP = re.compile(r"(Epoch|Iter)\((train|val|test)\)\s+(?:\[\s*(\d+)\])?\[\s*(\d+)/(\d+)\]\s+")
# `key: value` pairs of mmcv's comma-separated items. eta's `1 day, 2:03:04` yields a stray `eta: 1`; the
# true eta is taken from the line when asked for (`eta_of`).
_KV = re.compile(r"([^\s,][^,]*?): ([^,\s]+)")
_ETA = re.compile(r"eta: ((?:\d+ days?, )?\d+:\d\d:\d\d)")
_GCA_PARAMS = re.compile(r"\[(\w+)\] GCA: params: ([\d,]+)")
_TOTAL = re.compile(r"Total: ([\d,]+)")
_LOAD = re.compile(r"load checkpoint from (?:local path: |http path: )?(\S+)")
_MISSING_HEADS = (
    "The following keys in model are not found in checkpoint:",
    "missing keys in source state_dict:",
)
_KEY_LINE = re.compile(r"[\w.\-]+(?:\.\*)?(?:\s*,\s*[\w.\-]+(?:\.\*)?)*,?")


def eta_of(line: str) -> str | None:
    match = _ETA.search(line)
    return match.group(1) if match else None


class _Clock:
    """Log timestamps to unix seconds; one `mktime` per distinct minute keeps long logs fast."""

    def __init__(self) -> None:
        self.minutes: dict[str, float] = {}

    def at(self, minute: str, seconds: str, millis: str = "0") -> float:
        base = self.minutes.get(minute)
        if base is None:
            fmt = "%Y-%m-%d %H:%M" if "-" in minute else "%Y/%m/%d %H:%M"
            try:
                base = _time.mktime(_time.strptime(minute, fmt))
            except ValueError:
                base = 0.0
            self.minutes[minute] = base
        return base + int(seconds) + int(millis) / 1000.0


def _train_header(line: str, at: int) -> tuple[int, int, int, int] | None:
    """(epoch, iter, iters per epoch, where the items start) of `... - Epoch [e][i/N]\\t...` (`at`: the ` - `)."""
    a = at + 10
    b = line.find("][", a, a + 12)
    c = line.find("/", b, b + 14)
    d = line.find("]", c, c + 12)
    epoch, it, total = line[a:b], line[b + 2:c], line[c + 1:d]
    if b < 0 or c < 0 or d < 0 or not (epoch.isdigit() and it.isdigit() and total.isdigit()):
        return None
    return int(epoch), int(it), int(total), d + 1


def _pairs(body: str) -> list[str] | None:
    """`lr: 2.0e-04, eta: 1 day, 2:03:04, loss: 3.1` -> [key, value, key, value, ...], or None if it does not pair
    up. eta `1 day, 2:03:04` is the only value with ", " inside; it comes out as `1 day 2:03:04`."""
    body = body.strip()
    if "day" in body:
        body = body.replace(" day, ", " day ", 1) if " day, " in body else body.replace(" days, ", " days ", 1)
    parts = body.replace(": ", ", ").split(", ") if body else []
    return None if len(parts) % 2 else parts


class _Layout:
    """One key layout of mmcv train lines (`Epoch [e][i/N]\\tk1: v1, k2: v2, ...`) as a compiled pattern, so a line
    with the layout of the line before it becomes a record with one C-level match and a `dict(zip(...))` over
    key objects whose hashes are already cached. Values stay strings (see the module docstring); eta keeps its
    `1 day, 2:03:04` form; mmcv's `time` (seconds per iteration) is stored as our `step_time`."""

    __slots__ = ("keys", "pattern")

    def __init__(self, keys: tuple[str, ...]):
        items = [re.escape(k) + (r": ((?:\d+ days?, )?[^,]*)" if k == "eta" else ": ([^,]*)") for k in keys]
        self.pattern = re.compile(r"Epoch \[(\d+)\]\[(\d+)/(\d+)\]\s*" + ", ".join(items) + r"\s*")
        self.keys = ("epoch", "iter", "iters_per_epoch") + tuple("step_time" if k == "time" else k for k in keys)


class TextLogParser(Parser):
    """mmcv and mmengine text logs (ours too: `bevctl.runs.TextLog` writes mmcv's format).

    With ``verification_only`` the train/val lines are skipped: our runs carry them in events.jsonl, and the
    text log is read only for the seed's grep-able checks in case the events lack them.
    """

    name = "text"

    def __init__(self, verification_only: bool = False) -> None:
        super().__init__()
        self.verification_only = verification_only
        self._clock = _Clock()
        self._in_missing = False  # inside a multi-line "keys not found" list
        self._gca_seen = False
        self._layout: _Layout | None = None  # the layout of the last train line
        self._layouts: dict[tuple[str, ...], _Layout] = {}

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        mmcv_head = _MMCV_HEAD.match
        train_record = self._train_record
        skip_train = self.verification_only
        last_record = last_line = None
        for line in lines:
            # The hot path, nearly every line of a long log: an mmcv train line, found without a regex.
            at = line.find(" - Epoch [", 23, 80)
            if at > 0:
                self._in_missing = False  # a train line ends a multi-line list of missing keys
                if skip_train:
                    continue
                record = train_record(line, at)
                if record is None:
                    self.garbage += 1
                else:
                    out.append(record)
                    last_record, last_line = record, line
                continue
            head = mmcv_head(line)
            if head is not None:
                when = self._clock.at(head.group(1), head.group(2), head.group(3))
                msg_at = head.end()
            else:
                head = _MMENGINE_HEAD.match(line)
                if head is not None:
                    when = self._clock.at(head.group(1), head.group(2))
                    msg_at = head.end()
                else:  # a continuation line of a multi-line message
                    when, msg_at = None, 0
            message = line[msg_at:].rstrip("\r\n")
            record = self._message(message, when, continuation=head is None)
            if record is not None:
                out.append(record)
        if last_record is not None:  # only the newest eta is ever shown
            last_record["eta"] = eta_of(last_line)  # type: ignore[arg-type]
        self.lines += len(lines)
        return out

    def _train_record(self, line: str, at: int) -> dict[str, Any] | None:
        """`<ts> - mmdet3d - INFO - Epoch [e][i/N]\\tlr: ..., loss: x` as a train record with our field names, or
        None when the `Epoch [e][i/N]` header is broken. Most lines repeat the layout of the line before: one
        pattern match. A new layout is learnt from the line's `key: value` pairs; a line that does not split into
        pairs goes to the regex (`_slow_train`)."""
        layout = self._layout
        match = layout.pattern.fullmatch(line, at + 3) if layout is not None else None
        if match is None:
            header = _train_header(line, at)
            if header is None:
                return None
            parts = _pairs(line[header[3]:])
            if parts is None:
                return self._slow_train(line)
            layout = self._layout_of(tuple(parts[::2]))
            match = layout.pattern.fullmatch(line, at + 3)
            if match is None:  # a value the pattern does not take, e.g. an eta in another format
                return self._pairs_record(line, header, parts)
        record: dict[str, Any] = dict(zip(layout.keys, match.groups()))
        record["kind"] = "train"
        record["epoch"], record["iter"] = int(record["epoch"]), int(record["iter"])
        record["iters_per_epoch"] = int(record["iters_per_epoch"])
        record["time"] = self._line_time(line)
        return record

    def _line_time(self, line: str) -> float | None:
        if line[19:20] != ",":
            return None
        base = self._clock.minutes.get(line[:16])
        if base is None:
            base = self._clock.at(line[:16], "0")
        return base + int(line[17:19]) + int(line[20:23]) / 1000.0

    def _layout_of(self, keys: tuple[str, ...]) -> _Layout:
        layout = self._layouts.get(keys)
        if layout is None:
            if len(self._layouts) >= 64:  # a log whose layout never settles: start over rather than grow
                self._layouts.clear()
            layout = self._layouts[keys] = _Layout(keys)
        self._layout = layout
        return layout

    def _pairs_record(self, line: str, header: tuple[int, int, int, int], parts: list[str]) -> dict[str, Any]:
        items = iter(parts)
        record: dict[str, Any] = dict(zip(items, items))
        record["step_time"] = record.pop("time", None)
        if "eta" in record:
            record["eta"] = eta_of(line)
        record["kind"] = "train"
        record["time"] = self._line_time(line)
        record["epoch"], record["iter"], record["iters_per_epoch"] = header[:3]
        return record

    def _slow_train(self, line: str) -> dict[str, Any]:
        at = line.find("Epoch [")
        step = _MMCV_TRAIN.match(line, at)
        record: dict[str, Any] = dict(_KV.findall(line, step.end())) if step else {}
        record["step_time"] = record.pop("time", None)
        record.pop("eta", None)
        record["kind"] = "train"
        record["time"] = self._clock.at(line[:16], line[17:19], line[20:23]) if line[19:20] == "," else None
        if step:
            record["epoch"], record["iter"] = int(step.group(1)), int(step.group(2))
            record["iters_per_epoch"] = int(step.group(3))
        return record

    def _message(self, message: str, when: float | None, continuation: bool) -> dict[str, Any] | None:
        if not continuation and message.startswith("Epoch(val)"):
            self._in_missing = False
            if self.verification_only:
                return None
            val = _MMCV_VAL.match(message)
            if val is not None:
                record: dict[str, Any] = dict(_KV.findall(message, val.end()))
                record.update(kind="val", time=when, epoch=int(val.group(1)))
                return record
        step = None if continuation else _MMENGINE_STEP.match(message)
        if step is not None:
            self._in_missing = False
            return None if self.verification_only else self._mmengine(message, step, when)
        return self._verification(message, when, continuation)

    def _mmengine(self, message: str, step: re.Match, when: float | None) -> dict[str, Any] | None:
        unit, mode, epoch, it, total = step.groups()
        fields: dict[str, Any] = {}
        for item in re.split(r"\s{2,}", message[step.end():].strip()):
            key, sep, value = item.rpartition(": ")
            if sep:
                fields[key] = value.strip()
        if mode == "train":
            fields["step_time"] = fields.pop("time", None)
            fields.update(kind="train", time=when, iter=int(it), iters_per_epoch=int(total))
            fields["epoch"] = int(epoch) if epoch is not None else 1
            if unit == "Iter":
                fields["global_step"] = int(it)
            return fields
        # Progress lines during evaluation carry only eta/time; the final one carries the metrics.
        metrics = {k: v for k, v in fields.items() if k not in ("eta", "time", "data_time", "memory")}
        if not metrics:
            return None
        for long, short in _MMENGINE_ALIASES.items():
            if long in metrics:
                metrics[short] = metrics[long]
        metrics.update(kind="val", time=when, epoch=int(epoch) if epoch is not None else None)
        return metrics

    def _verification(self, message: str, when: float | None, continuation: bool) -> dict[str, Any] | None:
        text = message.strip()
        if self._in_missing:
            if text and _KEY_LINE.fullmatch(text):
                keys = [k.strip() for k in text.split(",") if k.strip()]
                return {"kind": "checkpoint_missing", "keys": keys, "time": when, "_from": "text"}
            if text:
                self._in_missing = False
            else:
                return None
        if "GCA" in text:
            for mode, phrase in (("task", "Task-specific GCA mode enabled"), ("shared", "Shared GCA mode enabled")):
                if phrase in text:
                    self._gca_seen = True
                    return {"kind": "gca_enabled", "mode": mode, "time": when, "_from": "text"}
            match = _GCA_PARAMS.search(text)
            if match:
                self._gca_seen = True
                count = int(match.group(2).replace(",", ""))
                return {"kind": "gca_enabled", "params": {match.group(1): count}, "time": when, "_from": "text"}
        if self._gca_seen and text.startswith("Total:"):
            match = _TOTAL.match(text)
            if match:
                self._gca_seen = False
                return {"kind": "gca_enabled", "total": int(match.group(1).replace(",", "")), "_from": "text"}
        if "load checkpoint from" in text:
            match = _LOAD.search(text)
            if match:
                return {"kind": "checkpoint_loaded", "path": match.group(1), "time": when, "_from": "text"}
        for head in _MISSING_HEADS:
            at = text.find(head)
            if at >= 0:
                self._in_missing = True
                rest = text[at + len(head):].strip()
                keys = [k.strip() for k in rest.split(",") if k.strip()]
                return {"kind": "checkpoint_missing", "keys": keys, "time": when, "_from": "text"}
        return None


# --------------------------------------------------------------------------------------------- JSON logs


class MmcvJsonParser(Parser):
    """mmcv's `<ts>.log.json`: a first line of runner meta (`{}`), then `{"mode": "train", ...}` per interval."""

    name = "mmcv-json"

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        out = []
        for data in self._json_objects(lines):
            mode = data.pop("mode", None)
            if mode == "train":
                data["step_time"] = data.pop("time", None)
                data["kind"] = "train"
                data["time"] = None
                out.append(data)
            elif mode == "val":
                data.pop("time", None)
                data.pop("data_time", None)
                data["kind"] = "val"
                data["time"] = None
                out.append(data)
            # anything else (the runner meta line) is not a step
        self.lines += len(lines)
        return out


class MmengineScalarsParser(Parser):
    """mmengine's `vis_data/scalars.json`: one JSON object per logged step, `step` = global iteration (train)
    or epoch (val); validation lines have no `lr`/`loss`."""

    name = "mmengine-json"

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        out = []
        for data in self._json_objects(lines):
            if "lr" in data or "loss" in data:
                data["step_time"] = data.pop("time", None)
                data["kind"] = "train"
                data["time"] = None
                if "step" in data:
                    data["global_step"] = data["step"]
            else:
                for key in ("time", "data_time"):
                    data.pop(key, None)
                for long, short in _MMENGINE_ALIASES.items():
                    if long in data:
                        data[short] = data[long]
                data["kind"] = "val"
                data["time"] = None
                data.setdefault("epoch", data.get("step"))
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


def parser_for_file(path: Path) -> tuple[Callable[[], Parser], str]:
    name = path.name
    if name == runs.EVENTS or name.endswith(".jsonl"):
        return EventsParser, "events"
    if name.endswith(".log.json"):
        return MmcvJsonParser, "mmcv-json"
    if name == "scalars.json" or (path.parent.name == "vis_data" and name.endswith(".json")):
        return MmengineScalarsParser, "mmengine-json"
    return TextLogParser, "text"


def _checkout_run(path: Path) -> bool:
    """A run of the user's own BEVFusion checkout (`trainer:` in run.json's config, bevctl.launchers.checkout):
    bevctl wrote run.json, but the training logs are the checkout's mmcv/mmengine files."""
    config = (runs.read_manifest(path) or {}).get("config")
    return isinstance(config, dict) and bool(config.get("trainer"))


def discover(path: Path) -> list[Pattern]:
    """What to follow for a run directory (ours, the original BEVFusion's, mmdet3d's) or a single log file."""
    if path.is_file():
        make, label = parser_for_file(path)
        return [Pattern(path.parent, path.name, make, label)]
    ours = (path / runs.EVENTS).exists() or ((path / runs.MANIFEST).exists() and not _checkout_run(path))
    if ours:
        return [
            Pattern(path, runs.EVENTS, EventsParser, "events"),
            Pattern(path, "*.log", lambda: TextLogParser(verification_only=True), "text (checks only)"),
        ]
    # mmengine: <work_dir>/<timestamp>/<timestamp>.log and .../vis_data/scalars.json; follow the newest session.
    sessions = sorted(p for p in path.glob("*/vis_data") if p.is_dir())
    if (path / "vis_data").is_dir():
        sessions.append(path / "vis_data")
    if sessions:
        session = sessions[-1].parent
        if any(session.glob("*.log")):
            return [Pattern(session, "*.log", TextLogParser, "mmengine text")]
        return [Pattern(session / "vis_data", "scalars.json", MmengineScalarsParser, "mmengine-json")]
    # mmcv (the original BEVFusion): `<ts>.log` holds everything `<ts>.log.json` does plus the checks and ETA.
    if any(p.suffix == ".log" for p in path.glob("*.log")):
        return [Pattern(path, "*.log", TextLogParser, "mmcv text")]
    if any(path.glob("*.log.json")):
        return [Pattern(path, "*.log.json", MmcvJsonParser, "mmcv-json")]
    # Nothing yet (a run that has not started logging): wait for our files.
    return [
        Pattern(path, runs.EVENTS, EventsParser, "events"),
        Pattern(path, "*.log", TextLogParser, "text"),
    ]
