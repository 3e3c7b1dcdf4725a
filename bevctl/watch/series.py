"""One metric as floats, built lazily and incrementally from the records, with TensorBoard's smoothing and the
x position of every point (in epochs, from the logged iteration within the epoch)."""

from __future__ import annotations

import fnmatch
import math
from operator import methodcaller
from typing import Any, Iterable

from bevctl.watch.records import number


def debiased_ema(values: Iterable[float], weight: float) -> list[float]:
    """TensorBoard's scalar smoothing: an EMA started at 0 and divided by (1 - weight^n) so early points are not
    pulled toward 0; non-finite points pass through unchanged and do not enter the average."""
    out: list[float] = []
    last, n = 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        n += 1
        out.append(last / (1 - weight**n) if weight > 0 else last)
    return out


def matches(pattern: str, name: str) -> bool:
    """A metric pattern matches exactly, as a `/`-prefix (`loss/map/divider`) or as a glob (`loss/*/dice`).
    (`RunState.chosen_metrics` lets an exact match win over the prefix.)"""
    if name == pattern or name.startswith(pattern.rstrip("/") + "/"):
        return True
    return any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern)


def lower_is_better(metric: str) -> bool:
    leaf = metric.rsplit("/", 1)[-1]
    return metric.startswith("loss") or "loss" in leaf or leaf.endswith("_err") or leaf in ("mATE", "mASE", "mAOE",
                                                                                              "mAVE", "mAAE")


class Series:
    """One metric: its values (only records that have it), their epochs and records, the smoothed line."""

    __slots__ = ("name", "values", "epochs", "rows", "consumed", "smoothed", "_ema", "_n", "lo", "hi", "nonfinite",
                 "_xs", "_xs_hint")

    def __init__(self, name: str):
        self.name = name
        self.values: list[float] = []
        self.epochs: list[int | None] = []
        self.rows: list[dict[str, Any]] = []  # the records behind the values (for x positions)
        self.consumed = 0
        self.smoothed: list[float] = []
        self._ema = 0.0
        self._n = 0
        self.lo: float | None = None  # running min/max of the finite values: summaries stay O(1) per redraw
        self.hi: float | None = None
        self.nonfinite = 0
        self._xs: list[float | None] = []
        self._xs_hint: int | None = None

    def extend(self, records: list[dict[str, Any]], weight: float) -> None:
        name = self.name
        new = records[self.consumed:] if self.consumed else records
        raw = list(map(methodcaller("get", name), new))  # C-level loops: this runs over every record
        if None in raw:  # a metric some records lack (logged every k steps, or another kind of line)
            keep = [i for i, v in enumerate(raw) if v is not None]
            raw = [raw[i] for i in keep]
            new = [new[i] for i in keep]
        # events.jsonl gives floats already; text logs give strings, converted here and only here: one C-level
        # map when every value converts (bools are not numbers here, as in `number`), else value by value
        try:
            values = list(map(float, raw))
        except (TypeError, ValueError):
            values = None
        if values is None or bool in set(map(type, raw)):
            values = [v if type(v) is float else number(v) for v in raw]
        if None in values:
            keep = [i for i, v in enumerate(values) if v is not None]
            values = [values[i] for i in keep]
            new = [new[i] for i in keep]
        self.values.extend(values)  # type: ignore[arg-type]
        self.rows.extend(new)
        self.epochs.extend(map(methodcaller("get", "epoch"), new))
        ema, n, append = self._ema, self._n, self.smoothed.append
        keep_weight, new_weight = weight, 1 - weight
        decay = weight**n  # weight^n, the debiasing term, updated by one multiply per point
        isfinite = math.isfinite
        nonfinite = 0
        for value in values:
            if isfinite(value):  # type: ignore[arg-type]
                ema = ema * keep_weight + new_weight * value  # type: ignore[operator]
                decay *= keep_weight
                append(ema / (1 - decay) if weight > 0 else ema)
            else:
                nonfinite += 1
                append(value)  # type: ignore[arg-type]
        self.nonfinite += nonfinite
        self._ema, self._n = ema, n + len(values) - nonfinite
        finite = [v for v in values if isfinite(v)] if nonfinite else values  # type: ignore[arg-type]
        if finite:
            lo, hi = min(finite), max(finite)  # type: ignore[type-var]
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
        self.consumed = len(records)

    def positions(self, per_epoch_hint: int | None = None) -> list[float] | None:
        """x of every point in epochs: epoch e spans (e-1, e], a train point sits at e-1 + iter/iters_per_epoch
        (from the record, else `per_epoch_hint`: what the log said elsewhere), a validation point at e. None when
        the records do not say where they are (then charts fall back to the logged order)."""
        if per_epoch_hint != self._xs_hint:
            self._xs, self._xs_hint = [], per_epoch_hint
        xs = self._xs
        for record in self.rows[len(xs):]:
            xs.append(_position(record, per_epoch_hint))
        if not xs or None in xs:
            return None
        return xs  # type: ignore[return-value]

    def epoch_mean(self, epoch: int | None) -> float | None:
        if epoch is None:
            return None
        total, n = 0.0, 0
        for i in range(len(self.values) - 1, -1, -1):
            e = self.epochs[i]
            if e != epoch:
                if e is not None and isinstance(e, int) and e < epoch:
                    break
                continue
            if math.isfinite(self.values[i]):
                total += self.values[i]
                n += 1
        return total / n if n else None


def _position(record: dict[str, Any], per_epoch_hint: int | None) -> float | None:
    epoch = record.get("epoch")
    if record.get("kind") == "val":
        return float(epoch) if isinstance(epoch, int) else None
    per_epoch = record.get("iters_per_epoch") or per_epoch_hint
    it = record.get("iter")
    if isinstance(epoch, int) and isinstance(it, int) and per_epoch:
        return epoch - 1 + it / int(per_epoch)
    step = record.get("global_step")
    if isinstance(step, int) and per_epoch:
        return step / int(per_epoch)
    return None
