"""Text logs of mmcv 1.x (the original BEVFusion, and ours: `bevctl.runs.TextLog` writes its format) and of
mmengine (mmdet3d 1.x), both ``<timestamp> - <logger> - <LEVEL> - <message>``::

    2022-10-17 18:10:44,756 - mmdet3d - INFO - Epoch [1][1850/2575]\\tlr: 2.158e-05, eta: 5 days, 12:01:11, ...
    2025/04/09 13:17:08 - mmengine - INFO - Epoch(train)  [5][5550/7724]  base_lr: 6.7000e-04 lr: 6.7528e-04  ...

Step lines of both share one grammar and one reader (`TextLogParser._step`): a header (``Epoch [e][i/N]``,
``Epoch(mode) [e][i/N]``, mmengine's ``Iter(mode) [i/N]``, mmcv's ``Epoch(val) [e][N]``), then ``key: value``
items separated by ``, `` (mmcv), two spaces (mmengine) or one space where a logger joins several learning rates
(mmengine's ``base_lr: .. lr: ..``, mmcv's ``lr_<group>: ..``). Keys may hold spaces (``NuScenes metric/..``);
values never do, except eta (``1 day, 2:03:04``).

Speed: nearly every line of a long log is a train line laid out like the line before. A layout (its keys and
separators, learnt by `split_items`) is compiled into one pattern, so such a line becomes a record with one C-level
match and a ``dict(zip(...))`` over key objects whose hashes are cached. A line that does not fit its layout is
split again, which learns the new layout.
"""

from __future__ import annotations

import re
import time as _time
from typing import Any

from bevctl.watch.records import Parser, add_aliases

_HEAD = re.compile(r"(\d{4}[-/]\d\d[-/]\d\d \d\d:\d\d):(\d\d)(?:,(\d{3}))? - \S+ - [A-Z]+ - ")
_STEP = r"(?:Epoch|Iter)(?:\((train|val|test)\))?\s*(?:\[\s*(\d+)\])?\[\s*(\d+)(?:/(\d+))?\]\s*"
_STEP_RE = re.compile(_STEP)
_STEP_KEYS = ("epoch", "iter", "iters_per_epoch")
_ETA_VALUE = r"((?:\d+ days?, )?\d+:\d\d:\d\d)"
_VALUE = r"([^,]*)"
_ETA = re.compile(r"eta: ((?:\d+ days?, )?\d+:\d\d:\d\d)")
_NOT_METRICS = ("eta", "step_time", "data_time", "memory")

_GCA_PARAMS = re.compile(r"\[(\w+)\] GCA: params: ([\d,]+)")
_TOTAL = re.compile(r"Total: ([\d,]+)")
_LOAD = re.compile(r"load checkpoint from (?:local path: |http path: )?(\S+)", re.IGNORECASE)
# mmcv's and mmengine's `load_state_dict` warning (after `The model and loaded state dict do not match exactly`),
# and the original BEVFusion's multi-line form of the missing keys.
_KEY_LIST_HEADS = (
    ("The following keys in model are not found in checkpoint:", "missing"),
    ("missing keys in source state_dict:", "missing"),
    ("unexpected key in source state_dict:", "unexpected"),
)
# torch's message, which both loaders pass on: shapes as `torch.Size([256, 80, 3, 3])`.
_MISMATCH = re.compile(r"size mismatch for (\S+?): copying a param with shape (?:torch\.Size\()?\[?([\d, ]*)\]?\)? "
                       r"from checkpoint, the shape in current model is (?:torch\.Size\()?\[?([\d, ]*)\]?\)?")
_KEY_LINE = re.compile(r"[\w.\-]+(?:\.\*)?(?:\s*,\s*[\w.\-]+(?:\.\*)?)*,?")


def eta_of(line: str) -> str | None:
    match = _ETA.search(line)
    return match.group(1) if match else None


def split_items(body: str) -> list[tuple[str, str, str]] | None:
    """``k1: v1, k2: v2`` / ``k1: v1  k2: v2`` / ``k1: v1 k2: v2`` as (key, value, separator after it) triples, or
    None when the text is not made of such items."""
    parts = body.strip().split(": ")
    if len(parts) < 2:
        return None
    items: list[tuple[str, str, str]] = []
    key = parts[0]
    for part in parts[1:-1]:  # each is `value<separator>next key`
        if "  " in part:  # mmengine; the value may be an eta with ", " inside
            value, sep, following = part.rpartition("  ")
        elif ", " in part:  # mmcv; only eta's value holds ", " (anything else after the value is dropped)
            sep = ", "
            value = part.rpartition(", ")[0] if key == "eta" else part.partition(", ")[0]
            following = part.rpartition(", ")[2]
        elif " " in part:  # learning rates joined by one space
            value, sep, following = part.partition(" ")
        else:
            return None
        items.append((key.strip(), value.strip(), sep))
        key = following
    items.append((key.strip(), parts[-1].strip(), ""))
    return items


class _Layout:
    """One kind of step line (its header's shape, its keys and separators) compiled into one pattern. The header
    text before the first `[` is matched literally (`Epoch `, `Epoch(train)  `): its mode is known at compile
    time, and the match does no alternation."""

    __slots__ = ("keys", "pattern", "mode")

    def __init__(self, prefix: str, mode: str | None, has_epoch: bool, has_total: bool,
                 items: tuple[tuple[str, str], ...]):
        pad = r"\s*" if mode else ""  # mmengine right-aligns the numbers in the brackets, mmcv never
        head = (re.escape(prefix) + (rf"\[{pad}(\d+)\]" if has_epoch else "()") + rf"\[{pad}(\d+)"
                + (r"/(\d+)\]" if has_total else r"()\]") + r"\s*")
        pieces = [re.escape(key) + ": " + (_ETA_VALUE if key == "eta" else _VALUE if sep == ", " else r"(\S*)")
                  + re.escape(sep) for key, sep in items]
        self.pattern = re.compile(head + "".join(pieces) + r"\s*")
        # the hot path tests only `mode == "train"`: lines without an epoch (by-iteration runs) get their own name
        self.mode = (mode or "train") if has_epoch or (mode or "train") != "train" else "train-by-iter"
        # mmcv's and mmengine's `time` is seconds per iteration: our `step_time` (`time` is when it was logged)
        self.keys = _STEP_KEYS + tuple("step_time" if key == "time" else key for key, _ in items)


class _Clock:
    """Log timestamps to unix seconds; one `mktime` per distinct minute keeps long logs fast."""

    def __init__(self) -> None:
        self.minutes: dict[str, float] = {}

    def at(self, minute: str, seconds: str, millis: str | None = None) -> float:
        base = self.minutes.get(minute)
        if base is None:
            fmt = "%Y-%m-%d %H:%M" if "-" in minute else "%Y/%m/%d %H:%M"
            try:
                base = _time.mktime(_time.strptime(minute, fmt))
            except ValueError:
                base = 0.0
            self.minutes[minute] = base
        return base + int(seconds) + (int(millis) / 1000.0 if millis else 0.0)

    def of_line(self, line: str) -> float | None:
        """The time of a line starting with an mmcv (`,mmm`) or mmengine timestamp, without a regex."""
        mark = line[19:20]
        if mark != "," and mark != " ":
            return None
        try:
            base = self.minutes.get(line[:16])
            if base is None:
                base = self.at(line[:16], "0")
            return base + int(line[17:19]) + (int(line[20:23]) / 1000.0 if mark == "," else 0.0)
        except ValueError:
            return None


class TextLogParser(Parser):
    """mmcv and mmengine text logs. With ``verification_only`` step lines are not turned into records (a run's
    events.jsonl or a structured log next to it carries them); the text is then read for the checks (GCA counts,
    checkpoint loading) and, from its newest step line, iters per epoch and eta (`log_meta`)."""

    name = "text"

    def __init__(self, verification_only: bool = False) -> None:
        super().__init__()
        self.verification_only = verification_only
        self._clock = _Clock()
        self._in_list: str | None = None  # inside a multi-line list of missing/unexpected keys
        self._gca_seen = False
        self._layout: _Layout | None = None  # the layout of the last step line
        self._layouts: dict[tuple[tuple[str, str], ...], _Layout] = {}

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        step = self._step
        minutes = self._clock.minutes
        skip_steps = self.verification_only
        last_record = last_line = None
        for line in lines:
            # The hot path, nearly every line of a long log: a step line, found without a regex.
            at = line.find(" - Epoch", 19, 80)
            if at < 0:
                at = line.find(" - Iter", 19, 80)
            if at > 0:
                self._in_list = None  # a step line ends a multi-line list of keys
                if skip_steps:
                    if not line.startswith(("Epoch(val", "Epoch(test", "Iter(val", "Iter(test"), at + 3):
                        last_line = line
                    continue
                layout = self._layout
                match = layout.pattern.fullmatch(line, at + 3) if layout is not None else None
                if match is not None and layout.mode == "train" and line[19:20] == ",":  # type: ignore[union-attr]
                    # an mmcv train line laid out like the line before: the record in a few C-level steps
                    record = dict(zip(layout.keys, match.groups()))  # type: ignore[union-attr]
                    record["kind"] = "train"
                    record["epoch"], record["iter"] = int(record["epoch"]), int(record["iter"])
                    record["iters_per_epoch"] = int(record["iters_per_epoch"]) if record["iters_per_epoch"] else None
                    minute = minutes.get(line[:16])
                    record["time"] = (minute + int(line[17:19]) + int(line[20:23]) / 1000.0 if minute is not None
                                      else self._clock.of_line(line))
                else:
                    record = step(line, at + 3)  # another kind of line, or a new layout
                    if record is None:
                        continue
                out.append(record)
                if record["kind"] == "train":
                    last_record, last_line = record, line
                continue
            head = _HEAD.match(line)
            when = self._clock.at(head.group(1), head.group(2), head.group(3)) if head else None
            record = self._verification(line[head.end():] if head else line, when, continuation=head is None)
            if record is not None:
                out.append(record)
        if last_record is not None and "eta" in last_record:  # only the newest eta is ever shown
            last_record["eta"] = eta_of(last_line)  # type: ignore[arg-type]
        elif skip_steps and last_line is not None:
            meta = self._meta(last_line)
            if meta is not None:
                out.append(meta)
        self.lines += len(lines)
        return out

    # ----------------------------------------------------------------------------------------- step lines

    def _step(self, line: str, start: int) -> dict[str, Any] | None:
        layout = self._layout
        match = layout.pattern.fullmatch(line, start) if layout is not None else None
        if match is not None:
            return self._finish(dict(zip(layout.keys, match.groups())), layout.mode, line)  # type: ignore[union-attr]
        header = _STEP_RE.match(line, start)
        items = split_items(line[header.end():]) if header is not None else None
        if header is None or items is None:
            self.garbage += 1
            return None
        mode, epoch, _, total = header.groups()
        prefix = line[start:line.index("[", start)]
        key = (prefix, mode, epoch is not None, total is not None, tuple((k, sep) for k, _, sep in items))
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= 64:  # a log whose layout never settles: start over rather than grow
                self._layouts.clear()
            layout = self._layouts[key] = _Layout(*key)
        self._layout = layout
        match = layout.pattern.fullmatch(line, start)
        if match is not None:
            return self._finish(dict(zip(layout.keys, match.groups())), layout.mode, line)
        # a value the compiled pattern does not take (e.g. one with a space): the split items as they are
        record: dict[str, Any] = dict(zip(_STEP_KEYS, header.groups()[1:]))
        record.update(("step_time" if k == "time" else k, value) for k, value, _ in items)
        return self._finish(record, layout.mode, line)

    def _finish(self, record: dict[str, Any], mode: str, line: str) -> dict[str, Any] | None:
        epoch, total = record["epoch"], record["iters_per_epoch"]
        record["iter"] = int(record["iter"])
        record["time"] = self._clock.of_line(line)
        if mode == "train" or mode == "train-by-iter":
            record["kind"] = "train"
            record["epoch"] = int(epoch) if epoch else 1
            record["iters_per_epoch"] = int(total) if total else None
            if not epoch:  # mmengine by iteration: `Iter(train) [i/max_iters]`
                record["global_step"] = record["iter"]
            return record
        if mode != "val":
            return None
        # Progress lines during evaluation carry only eta/time; the final one carries the metrics.
        for key in _NOT_METRICS:
            record.pop(key, None)
        if len(record) <= 4:
            return None
        record["kind"] = "val"
        record["epoch"] = int(epoch) if epoch else None
        del record["iters_per_epoch"], record["iter"]
        add_aliases(record)
        return record

    def _meta(self, line: str) -> dict[str, Any] | None:
        at = max(line.find(" - Epoch", 19, 80), line.find(" - Iter", 19, 80))
        header = _STEP_RE.match(line, at + 3) if at > 0 else None
        if header is None or header.group(1) not in (None, "train") or header.group(4) is None:
            return None
        return {"kind": "log_meta", "iters_per_epoch": int(header.group(4)), "eta": eta_of(line)}

    # ----------------------------------------------------------------------------------------- checks

    def _verification(self, message: str, when: float | None, continuation: bool) -> dict[str, Any] | None:
        text = message.strip()
        if self._in_list is not None:
            if text and _KEY_LINE.fullmatch(text):
                keys = [k.strip() for k in text.split(",") if k.strip()]
                return {"kind": "checkpoint_keys", self._in_list: keys, "time": when, "_from": "text"}
            if text:
                self._in_list = None
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
        if "heckpoint from" in text:
            match = _LOAD.search(text)
            if match:
                return {"kind": "checkpoint_loaded", "path": match.group(1), "time": when, "_from": "text"}
        if text.startswith("size mismatch for "):
            match = _MISMATCH.match(text)
            if match:
                shapes = [[int(d) for d in s.replace(" ", "").split(",") if d] for s in match.group(2, 3)]
                return {"kind": "checkpoint_keys", "_from": "text", "time": when,
                        "mismatched": [{"key": match.group(1), "checkpoint": shapes[0], "model": shapes[1]}]}
        for head, which in _KEY_LIST_HEADS:
            at = text.find(head)
            if at >= 0:
                self._in_list = which
                rest = text[at + len(head):].strip()
                keys = [k.strip() for k in rest.split(",") if k.strip()]
                return {"kind": "checkpoint_keys", which: keys, "time": when, "_from": "text"}
        return None
