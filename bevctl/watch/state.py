"""What `bevctl watch` knows about one run: records in, a snapshot (metrics, progress, checks, alerts) out.

Series are built lazily and incrementally: ingesting keeps the records as they come, and only the metrics a
panel, a check or `--json` asks for are turned into float lists, extended by the records added since the last
ask. That keeps ingesting a 100k-line log close to the cost of parsing it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import socket
import statistics
import time
from operator import methodcaller
from pathlib import Path
from typing import Any, Iterable

from bevctl.watch.sources import is_metric, number

SNAPSHOT_SCHEMA = 1
# fp16 dynamic loss scaling skips steps with inf/nan gradients now and then; only a streak means trouble.
GRAD_NORM_STREAK = 5
SPIKE_Z = 4.0
SPIKE_WARMUP = 10
SPIKE_ALPHA = 0.05
STALL_FACTOR = 5.0
STALL_FLOOR_S = 30.0
RECENT = 20  # records used for step time, it/s and data_time ratio
ENDED = ("finished", "stopped", "failed", "crashed")
# The full model's GCA parameter count per task (the seed's log: `[object] GCA: params: 131,072`).
FULL_GCA_PER_TASK = 131_072


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


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Series:
    """One metric as floats (NaN where a record lacks it is not stored: only records that have it)."""

    __slots__ = ("name", "values", "epochs", "consumed", "smoothed", "_ema", "_n", "lo", "hi", "nonfinite")

    def __init__(self, name: str):
        self.name = name
        self.values: list[float] = []
        self.epochs: list[int | None] = []
        self.consumed = 0
        self.smoothed: list[float] = []
        self._ema = 0.0
        self._n = 0
        self.lo: float | None = None  # running min/max of the finite values: summaries stay O(1) per redraw
        self.hi: float | None = None
        self.nonfinite = 0

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


class RunState:
    def __init__(self, path: Path, patterns: list[str] | None = None, smooth: float = 0.6):
        from bevctl import runs

        self.path = path
        self.run_dir = path if path.is_dir() else path.parent
        self.smooth = smooth
        self.manifest: dict[str, Any] | None = runs.read_manifest(self.run_dir)
        self.config: dict[str, Any] = (self.manifest or {}).get("config") or {}
        self.user_patterns = list(patterns or [])
        self.train: list[dict[str, Any]] = []
        self.val: list[dict[str, Any]] = []
        self.train_names: dict[str, None] = {}
        self.val_names: dict[str, None] = {}
        self._last_keys: Any = None
        self.run_start: dict[str, Any] | None = None
        self.run_end: dict[str, Any] | None = None
        self.gca: dict[str, Any] | None = None
        self.gca_source = ""
        self.checkpoints: list[dict[str, Any]] = []
        self.text_checkpoint: dict[str, Any] | None = None
        self.logged_alerts: list[dict[str, Any]] = []
        self.saved: list[dict[str, Any]] = []
        self.last_update = time.time()  # wall time of the newest line seen (file mtimes refine it)
        self.first_seen = time.time()
        self.arrivals: list[float] = []
        self._series: dict[tuple[str, str], Series] = {}
        # incremental alert scanning of `loss` / `grad_norm`
        self._loss_seen = 0
        self._grad_seen = 0
        self.nonfinite_loss = 0
        self.first_nonfinite: dict[str, Any] | None = None
        self.grad_streak = 0
        self.grad_streak_max = 0
        self.spikes = 0
        self.last_spike: dict[str, Any] | None = None
        self._mean: float | None = None
        self._var = 0.0
        self._spike_n = 0
        self._process_checked = 0.0
        self._process_alert: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------------- ingest

    def ingest(self, records: list[dict[str, Any]]) -> None:
        now = time.time()
        self.arrivals.append(now)
        if len(self.arrivals) > 200:
            del self.arrivals[:100]
        train = self.train
        names = self.train_names
        for record in records:
            kind = record.get("kind")
            if kind == "train":
                train.append(record)
                keys = record.keys()
                if keys != self._last_keys:  # key sets rarely change; compare in C, merge only on change
                    for key in keys:
                        if key not in names and is_metric(key):
                            names[key] = None
                    self._last_keys = keys
            elif kind == "val":
                self.val.append(record)
                for key in record:
                    if is_metric(key) and number(record[key]) is not None:
                        self.val_names.setdefault(key, None)
            elif kind == "run_start":
                self.run_start = record
                self.run_end = None
            elif kind == "run_end":
                self.run_end = record
            elif kind == "gca_enabled":
                self._gca(record)
            elif kind == "checkpoint_loaded":
                if record.get("_from") == "text":
                    self.text_checkpoint = {"path": record.get("path"), "missing": [], "how": "load_from"}
                else:
                    self.checkpoints.append(record)
            elif kind == "checkpoint_missing":
                if self.text_checkpoint is None:
                    self.text_checkpoint = {"path": None, "missing": [], "how": "load_from"}
                self.text_checkpoint["missing"].extend(record.get("keys") or [])
            elif kind == "checkpoint_saved":
                self.saved.append(record)
            elif kind == "alert":
                self.logged_alerts.append(record)
                del self.logged_alerts[:-20]

    def _gca(self, record: dict[str, Any]) -> None:
        from_text = record.get("_from") == "text"
        if self.gca is not None and from_text and self.gca_source == "events":
            return  # events are authoritative; the text log only fills in when they are missing
        if self.gca is None or (not from_text and self.gca_source == "text"):
            self.gca = {"mode": None, "params": {}, "total": None}
            self.gca_source = "text" if from_text else "events"
        if record.get("mode"):
            self.gca["mode"] = record["mode"]
        self.gca["params"].update(record.get("params") or {})
        if record.get("total") is not None:
            self.gca["total"] = record["total"]

    # ----------------------------------------------------------------------------------------- series

    def series(self, name: str) -> Series:
        source = "train" if name in self.train_names or name not in self.val_names else "val"
        records = self.train if source == "train" else self.val
        key = (source, name)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Series(name)
        if series.consumed < len(records):
            series.extend(records, self.smooth)
        return series

    def chosen_metrics(self) -> list[str]:
        names = list(self.train_names) + [n for n in self.val_names if n not in self.train_names]
        if not self.user_patterns:  # defaults name metrics exactly: `loss`, not every `loss/...`
            return [n for n in self.default_patterns() if n in self.train_names or n in self.val_names]
        chosen: dict[str, None] = {}
        for pattern in self.user_patterns:
            # `-m loss` means the total; `-m loss/map/divider` (no such metric) means everything under it
            hits = [pattern] if pattern in names else [n for n in names if matches(pattern, n)]
            for name in sorted(hits) if len(hits) > 1 else hits:
                chosen.setdefault(name, None)
        return list(chosen)

    def default_patterns(self) -> list[str]:
        patterns = ["loss"]
        for band in self.bands():
            if band["metric"] not in patterns:
                patterns.append(band["metric"])
        return patterns

    def bands(self) -> list[dict[str, Any]]:
        """The phase's expectation bands from run.json's config (read as plain data: no pydantic at start-up)."""
        out = []
        for band in self.config.get("expectations") or []:
            try:
                e0, e1 = (int(x) for x in band["epochs"])
                out.append({"metric": str(band["metric"]), "epochs": (e0, e1), "start": float(band["start"]),
                            "end": float(band["end"]), "tolerance": float(band.get("tolerance", 0.02))})
            except (KeyError, TypeError, ValueError):
                continue
        return out

    # ----------------------------------------------------------------------------------------- alerts

    def _scan_alerts(self) -> None:
        loss = self.series("loss") if "loss" in self.train_names else None
        if loss is not None:
            values = loss.values
            for i in range(self._loss_seen, len(values)):
                value = values[i]
                if not math.isfinite(value):
                    self.nonfinite_loss += 1
                    if self.first_nonfinite is None:
                        self.first_nonfinite = {"index": i, "epoch": loss.epochs[i], "value": value}
                    continue
                if self._mean is None:  # seed with the first value, not 0 (cold-start false alarms)
                    self._mean, self._var = value, 0.0
                    self._spike_n = 1
                    continue
                std = math.sqrt(self._var)
                if self._spike_n >= SPIKE_WARMUP and std > 0 and (value - self._mean) / std > SPIKE_Z:
                    self.spikes += 1
                    self.last_spike = {"index": i, "epoch": loss.epochs[i], "value": value,
                                       "z": (value - self._mean) / std, "mean": self._mean}
                delta = value - self._mean
                self._mean += SPIKE_ALPHA * delta
                self._var = (1 - SPIKE_ALPHA) * (self._var + SPIKE_ALPHA * delta * delta)
                self._spike_n += 1
            self._loss_seen = len(values)
        if "grad_norm" in self.train_names:
            grad = self.series("grad_norm").values
            for i in range(self._grad_seen, len(grad)):
                if math.isfinite(grad[i]):
                    self.grad_streak = 0
                else:
                    self.grad_streak += 1
                    self.grad_streak_max = max(self.grad_streak_max, self.grad_streak)
            self._grad_seen = len(grad)

    def _median_interval(self) -> float | None:
        times = [r.get("time") for r in self.train[-50:]]
        times = [t for t in times if isinstance(t, (int, float))]
        gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
        if len(gaps) < 3:
            gaps = [b - a for a, b in zip(self.arrivals, self.arrivals[1:]) if b > a]
        return statistics.median(gaps) if len(gaps) >= 3 else None

    def status(self) -> str:
        if self.run_end is not None:
            return str(self.run_end.get("status") or "finished")
        manifest_status = (self.manifest or {}).get("status")
        if self._process_alert is not None:
            return "crashed"
        if manifest_status:
            return str(manifest_status)
        return "running" if self.run_start is not None else "unknown"

    def check_process(self, now: float, every_s: float = 10.0) -> None:
        """Is the run's process (pid on this host) or container still there? Only while it should be running."""
        if now - self._process_checked < every_s:
            return
        self._process_checked = now
        from bevctl import runs

        self.manifest = runs.read_manifest(self.run_dir) or self.manifest
        manifest = self.manifest or {}
        if self.run_end is not None or manifest.get("status") not in ("running", "created", None) or not manifest:
            self._process_alert = None
            return
        pid, host, container = manifest.get("pid"), manifest.get("host"), manifest.get("container_id")
        if container:
            state = _container_state(str(container))
            if state is not None and state != "running":
                self._process_alert = {"level": "error", "kind": "container_gone",
                                       "message": f"container {str(container)[:12]} is {state} and the run never "
                                                  "wrote run_end (crashed)"}
                return
        elif isinstance(pid, int) and host == socket.gethostname() and manifest.get("status") == "running":
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self._process_alert = {"level": "error", "kind": "process_gone",
                                       "message": f"process {pid} is gone and the run never wrote run_end (crashed)"}
                return
            except PermissionError:
                pass
        self._process_alert = None

    def alerts(self, now: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.nonfinite_loss:
            where = self.first_nonfinite or {}
            out.append({"level": "error", "kind": "nonfinite_loss",
                        "message": f"loss is non-finite in {self.nonfinite_loss} logged step(s), first in epoch "
                                   f"{where.get('epoch')}"})
        if self.grad_streak >= GRAD_NORM_STREAK or self.grad_streak_max >= GRAD_NORM_STREAK:
            out.append({"level": "error" if self.grad_streak >= GRAD_NORM_STREAK else "warning",
                        "kind": "nonfinite_grad_norm",
                        "message": f"grad_norm non-finite {self.grad_streak_max} logged steps in a row "
                                   f"(now {self.grad_streak}); occasional ones are normal under fp16"})
        if self.last_spike is not None:
            s = self.last_spike
            out.append({"level": "warning", "kind": "loss_spike",
                        "message": f"{self.spikes} loss spike(s); last {s['value']:.4g} in epoch {s['epoch']} "
                                   f"(z={s['z']:.1f} against running mean {s['mean']:.4g})"})
        if self.status() not in ENDED:
            interval = self._median_interval()
            quiet = now - self.last_update
            if interval is not None and quiet > max(STALL_FACTOR * interval, STALL_FLOOR_S):
                out.append({"level": "warning", "kind": "stalled",
                            "message": f"no new line for {_duration(quiet)} ({quiet / interval:.0f}x the median "
                                       f"interval of {_duration(interval)})"})
        if self._process_alert is not None:
            out.append(dict(self._process_alert))
        for alert in self.logged_alerts[-5:]:
            out.append({"level": alert.get("level", "warning"), "kind": "logged",
                        "message": str(alert.get("message", ""))})
        return out

    # ----------------------------------------------------------------------------------------- checks

    def verification(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        started = bool(self.train)
        rows.extend(self._gca_rows(started))
        rows.extend(self._checkpoint_rows(started))
        if "loss" in self.train_names:
            count = len(self.series("loss").values)
            if self.nonfinite_loss:
                rows.append(_row("losses finite", "fail", f"{self.nonfinite_loss} of {count} logged losses are "
                                                          "NaN/Inf"))
            else:
                rows.append(_row("losses finite", "ok", f"all {count} logged losses finite"))
        rows.extend(self._band_rows())
        return rows

    def _gca_rows(self, started: bool) -> list[dict[str, Any]]:
        model = self.config.get("model") or {}
        want_mode = model.get("gca")
        if want_mode == "none" or (not self.config and self.gca is None):
            return []
        gca = self.gca
        if gca is None:
            status = "fail" if started else "pending"
            return [_row("task-specific GCA", status, "no GCA line logged" + ("" if started else " yet"))]
        params = {k: int(v) for k, v in (gca.get("params") or {}).items()}
        total = gca.get("total")
        parts = [f"{task} {count:,}" for task, count in params.items()]
        if total is not None:
            parts.append(f"total {int(total):,}")
        problems = []
        mode = gca.get("mode")
        if want_mode and mode and mode != want_mode:
            problems.append(f"mode {mode}, phase wants {want_mode}")
        if mode is None and not params:
            problems.append("mode not logged")
        heads = model.get("heads") or (["object", "map"] if want_mode == "task" else [])
        missing = [h for h in heads if h not in params] if (want_mode or "task") == "task" else []
        if missing and (mode or "task") == "task":
            problems.append("no count for " + ", ".join(missing))
        if total is not None and params and int(total) != sum(params.values()):
            problems.append(f"total {int(total):,} != sum {sum(params.values()):,}")
        expected = self._expected_gca_count(model)
        if expected is not None:
            wrong = [t for t, c in params.items() if c != expected]
            if wrong:
                problems.append(f"expected {expected:,} per task")
        detail = f"mode {mode or '?'}: " + (", ".join(parts) if parts else "no counts")
        if problems:
            return [_row("task-specific GCA", "fail", detail + " (" + "; ".join(problems) + ")")]
        return [_row("task-specific GCA", "ok", detail)]

    def _expected_gca_count(self, model: dict[str, Any]) -> int | None:
        config = model.get("config", "full" if not self.config else None)
        if config is None:
            return None
        manifest = Path(__file__).resolve().parents[1] / "manifests" / f"{config}-task.json"
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            counts: dict[str, int] = {}
            for key in data.get("keys", []):
                group = str(key.get("group", ""))
                if group.startswith("task_gca.") and key.get("kind", "param") == "param":
                    counts[group] = counts.get(group, 0) + math.prod(key.get("shape") or [1])
            if counts:
                return max(counts.values()) if len(set(counts.values())) == 1 else None
        except (OSError, ValueError, TypeError):
            pass
        return FULL_GCA_PER_TASK if config == "full" else None

    def _checkpoint_rows(self, started: bool) -> list[dict[str, Any]]:
        expect = [str(g) for g in self.config.get("expect_missing") or []]
        allow_unexpected = [str(g) for g in self.config.get("allow_unexpected") or []]
        loads = list(self.checkpoints)
        if not loads and self.text_checkpoint is not None:
            loads = [self.text_checkpoint]
        if not loads:
            if self.config.get("load_from"):
                status = "fail" if started else "pending"
                return [_row("checkpoint loaded", status, f"no load of {self.config['load_from']} logged"
                             + ("" if started else " yet"))]
            return []
        from bevctl.runs import compress_keys

        rows = []
        for load in loads:
            how = str(load.get("how") or "load_from")
            missing = [str(k) for k in load.get("missing") or []]
            shown = [str(g) for g in load.get("missing_globs") or []] or compress_keys(missing)
            name = Path(str(load.get("path") or "?")).name
            problems = []
            if how == "load_from" or how == "resume":
                if self.config:
                    surprising = [k for k in missing if not any(fnmatch.fnmatchcase(k, g) for g in expect)]
                    if surprising:
                        problems.append(f"{len(surprising)} unexpected missing key(s): "
                                        + ", ".join(compress_keys(surprising)[:4]))
                    unexpected = [str(k) for k in load.get("unexpected") or []
                                  if not any(fnmatch.fnmatchcase(str(k), g) for g in allow_unexpected)]
                    if unexpected:
                        problems.append(f"{len(unexpected)} unexpected key(s) in checkpoint")
            if load.get("mismatched"):
                problems.append(f"{len(load['mismatched'])} shape mismatch(es)")
            if load.get("ok") is False and not problems:
                problems.append("loader reported a failure")
            what = f"{name} ({how})"
            what += f", missing {', '.join(shown[:4])}" if shown else ", nothing missing"
            if problems:
                rows.append(_row("checkpoint loaded", "fail", what + ": " + "; ".join(problems)))
            elif missing and not self.config:
                rows.append(_row("checkpoint loaded", "info", what + " (no phase to compare against)"))
            else:
                rows.append(_row("checkpoint loaded", "ok", what + (" - all expected" if missing else "")))
        return rows

    def current_epoch(self) -> int | None:
        for record in reversed(self.train[-5:]):
            epoch = record.get("epoch")
            if isinstance(epoch, int):
                return epoch
        return None

    def _band_rows(self) -> list[dict[str, Any]]:
        bands = self.bands()
        if not bands:
            return []
        rows = []
        epoch = self.current_epoch()
        by_metric: dict[str, list[dict[str, Any]]] = {}
        for band in bands:
            by_metric.setdefault(band["metric"], []).append(band)
        for metric, metric_bands in by_metric.items():
            is_val = metric in self.val_names or (metric not in self.train_names and not metric.startswith("loss"))
            if is_val:
                record = self.val[-1] if self.val else None
                at = record.get("epoch") if record else None
                value = number(record.get(metric)) if record else None
            else:
                at = epoch
                value = self.series(metric).epoch_mean(epoch) if metric in self.train_names else None
            band = _band_at(metric_bands, at)
            if band is None:
                upcoming = min((b["epochs"][0] for b in metric_bands), default=None)
                if at is None or (upcoming is not None and at < upcoming):
                    rows.append(_row(f"band {metric}", "pending", f"first band from epoch {upcoming}"))
                continue
            e0, e1 = band["epochs"]
            expected = band["start"] + (band["end"] - band["start"]) * (at - e0) / (e1 - e0)
            tol = band["tolerance"]
            if value is None:
                rows.append(_row(f"band {metric}", "pending", f"epoch {at}: no value yet (expect {expected:.4g})"))
                continue
            if lower_is_better(metric):
                good, rule = value <= expected + tol, f"<= {expected:.4g} + {tol:g}"
            else:
                good, rule = value >= expected - tol, f">= {expected:.4g} - {tol:g}"
            if not math.isfinite(value):
                good = False
            what = "epoch mean" if not is_val else "val"
            rows.append(_row(f"band {metric}", "ok" if good else "fail",
                             f"epoch {at} {what} {value:.4g} {rule}: {'on track' if good else 'off track'}",
                             expected=expected, value=value, epoch=at))
        return rows

    # ----------------------------------------------------------------------------------------- snapshot

    def progress(self) -> dict[str, Any]:
        last = self.train[-1] if self.train else {}
        recent = self.train[-RECENT:]
        steps = [v for v in (number(r.get("step_time")) for r in recent) if v is not None and v > 0]
        datas = [v for v in (number(r.get("data_time")) for r in recent) if v is not None and v >= 0]
        step = statistics.median(steps) if steps else None
        epoch, it = last.get("epoch"), last.get("iter")
        per_epoch = last.get("iters_per_epoch") or (self.run_start or {}).get("iters_per_epoch")
        epochs = (self.run_start or {}).get("epochs") or (self.config.get("train") or {}).get("epochs")
        eta = None
        if self.status() in ENDED:
            eta = 0.0
        elif step and isinstance(epoch, int) and isinstance(it, int) and per_epoch and epochs:
            eta = max(0.0, ((int(epochs) - epoch) * int(per_epoch) + (int(per_epoch) - it)) * step)
        elif last.get("eta"):
            eta = _parse_eta(str(last["eta"]))
        return {
            "epoch": epoch,
            "epochs": epochs,
            "iter": it,
            "iters_per_epoch": per_epoch,
            "global_step": last.get("global_step"),
            "lr": _finite(number(last.get("lr"))),
            "memory_mb": _finite(number(last.get("memory"))),
            "step_time": step,
            "it_per_s": (1.0 / step) if step else None,
            "data_time_ratio": (statistics.median(datas) / step) if (step and datas) else None,
            "eta_seconds": eta,
        }

    def metric_summary(self, name: str) -> dict[str, Any]:
        series = self.series(name)
        values = series.values
        smoothed = series.smoothed
        trend = None
        if len(smoothed) >= 3:
            back = smoothed[-min(len(smoothed) - 1, max(1, len(smoothed) // 5), 200) - 1]
            now = smoothed[-1]
            if math.isfinite(back) and math.isfinite(now) and back != 0:
                trend = (now - back) / abs(back)
        epoch = series.epochs[-1] if series.epochs else None
        return {
            "source": "val" if (name in self.val_names and name not in self.train_names) else "train",
            "count": len(values),
            "last": _finite(values[-1]) if values else None,
            "last_finite": bool(values) and math.isfinite(values[-1]),
            "min": series.lo,
            "max": series.hi,
            "smoothed": _finite(smoothed[-1]) if smoothed else None,
            "trend": trend,
            "epoch": epoch,
            "epoch_mean": series.epoch_mean(epoch) if isinstance(epoch, int) else None,
        }

    def validation(self) -> dict[str, Any] | None:
        if not self.val:
            return None
        last = self.val[-1]
        metrics = {k: _finite(number(v)) for k, v in last.items() if is_metric(k) and number(v) is not None}
        return {"epoch": last.get("epoch"), "metrics": metrics}

    def snapshot(self, now: float | None = None, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        self._scan_alerts()
        self.check_process(now)
        verification = self.verification()
        chosen = self.chosen_metrics()
        manifest = self.manifest or {}
        return {
            "run": {
                "name": manifest.get("name") or self.run_dir.name,
                "path": str(self.path),
                "phase": manifest.get("phase") or (self.run_start or {}).get("phase"),
                "status": self.status(),
                "where": manifest.get("where"),
                "last_update": self.last_update,
            },
            "progress": self.progress(),
            "metrics": {name: self.metric_summary(name) for name in chosen},
            "available_metrics": list(self.train_names) + [n for n in self.val_names if n not in self.train_names],
            "verification": verification,
            "validation": self.validation(),
            "alerts": self.alerts(now),
            "ingest": stats or {},
            "ok": not any(row["status"] == "fail" for row in verification),
        }


def _band_at(bands: list[dict[str, Any]], epoch: int | None) -> dict[str, Any] | None:
    if epoch is None:
        return None
    for band in bands:
        e0, e1 = band["epochs"]
        if e0 <= epoch < e1:
            return band
    for band in bands:
        if band["epochs"][1] == epoch:
            return band
    return None


def _row(check: str, status: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"check": check, "status": status, "detail": detail, **extra}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


def _parse_eta(text: str) -> float | None:
    days = 0
    if "day" in text:
        head, _, text = text.partition(",")
        try:
            days = int(head.split()[0])
        except (ValueError, IndexError):
            return None
    parts = text.strip().split(":")
    try:
        h, m, s = (int(p) for p in parts)
    except ValueError:
        return None
    return days * 86400 + h * 3600 + m * 60 + s


def _container_state(container_id: str) -> str | None:
    """The container's state through the docker SDK, or None when docker is not reachable (skipped quietly)."""
    try:
        import docker  # noqa: PLC0415 - only runs that live in containers pay for it
        from docker.errors import NotFound
    except Exception:
        return None
    try:
        client = docker.from_env(timeout=3)
        try:
            return str(client.containers.get(container_id).status)
        except NotFound:
            return "removed"
        finally:
            client.close()
    except Exception:
        return None
