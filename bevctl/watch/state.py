"""What `bevctl watch` knows about one run: records in, a snapshot (metrics, progress, checks, alerts) out.

Series are built lazily and incrementally (`series.Series`): ingesting keeps the records as they come, and only
the metrics a panel, a check or `--json` asks for are turned into float lists, extended by the records added
since the last ask. That keeps ingesting a 100k-line log close to the cost of parsing it. The pieces: `checks`
(verification rows), `alerts`, `progress`, `liveness` (is the process still there).
"""

from __future__ import annotations

import difflib
import time
from pathlib import Path
from typing import Any

from bevctl.watch import alerts as alerts_mod
from bevctl.watch import checks
from bevctl.watch.progress import final_statuses, progress
from bevctl.watch.records import CHARTABLE_FIELDS, is_metric, number
from bevctl.watch.series import Series, debiased_ema, matches  # noqa: F401 - re-exported for callers

SNAPSHOT_SCHEMA = 1


class RunState:
    def __init__(self, path: Path, patterns: list[str] | None = None, smooth: float = 0.6,
                 config: dict[str, Any] | None = None):
        from bevctl import runs

        self.path = path
        self.run_dir = path if path.is_dir() else path.parent
        self.smooth = smooth
        self.manifest: dict[str, Any] | None = runs.read_manifest(self.run_dir)
        # `--phase` gives any log a phase's expectations; otherwise the run's own phase from run.json
        self.config: dict[str, Any] = config if config is not None else (self.manifest or {}).get("config") or {}
        self.user_patterns = list(patterns or [])
        self.train: list[dict[str, Any]] = []
        self.val: list[dict[str, Any]] = []
        self.train_names: dict[str, None] = {}
        self.val_names: dict[str, None] = {}
        self._last_keys: Any = None
        self.run_start: dict[str, Any] | None = None
        self.run_end: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {}  # what a text log says beside the steps another file carries
        self.gca: dict[str, Any] | None = None
        self.gca_source = ""
        self.checkpoints: list[dict[str, Any]] = []
        self.text_checkpoint: dict[str, Any] | None = None
        self.logged_alerts: list[dict[str, Any]] = []
        self.saved: list[dict[str, Any]] = []
        self.last_update = time.time()  # wall time of the newest line seen (file mtimes refine it)
        self.arrivals: list[float] = []
        self._series: dict[tuple[str, str], Series] = {}
        self.scanner = alerts_mod.AlertScanner()
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
                    self.text_checkpoint = {"path": record.get("path"), "how": "load_from"}
                else:
                    self.checkpoints.append(record)
            elif kind == "checkpoint_keys":
                if self.text_checkpoint is None:
                    self.text_checkpoint = {"path": None, "how": "load_from"}
                for field in ("missing", "unexpected", "mismatched"):
                    if field in record:
                        self.text_checkpoint.setdefault(field, []).extend(record[field] or [])
            elif kind == "log_meta":
                self.meta.update({k: v for k, v in record.items() if v is not None and k != "kind"})
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

    # ----------------------------------------------------------------------------------------- metrics

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

    def iters_per_epoch(self) -> int | None:
        value = (self.run_start or {}).get("iters_per_epoch") or self.meta.get("iters_per_epoch")
        return int(value) if value else None

    def available(self) -> list[str]:
        return list(self.train_names) + [n for n in self.val_names if n not in self.train_names]

    def _chartable_fields(self) -> list[str]:
        last = self.train[-1] if self.train else {}
        return [k for k in last if k in CHARTABLE_FIELDS or (k.endswith("lr") and k not in self.train_names)]

    def chosen_metrics(self) -> list[str]:
        names = self.available()
        if not self.user_patterns:  # defaults name metrics exactly: `loss`, not every `loss/...`
            return [n for n in self.default_patterns() if n in self.train_names or n in self.val_names]
        extra = self._chartable_fields()
        chosen: dict[str, None] = {}
        for pattern in self.user_patterns:
            # `-m loss` means the total; `-m loss/map/divider` (no such metric) means everything under it
            if pattern in names or pattern in extra:
                hits = [pattern]
            else:
                hits = [n for n in names if matches(pattern, n)]
            for name in sorted(hits) if len(hits) > 1 else hits:
                chosen.setdefault(name, None)
        return list(chosen)

    def unknown_patterns(self) -> list[dict[str, Any]]:
        """The `-m` patterns that match nothing logged, each with the closest names (did you mean)."""
        if not self.train and not self.val:
            return []  # nothing logged yet: any name may still appear
        names = self.available() + self._chartable_fields()
        out = []
        for pattern in self.user_patterns:
            if pattern in names or any(matches(pattern, n) for n in names):
                continue
            close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
            leaf = [n for n in names if n.rsplit("/", 1)[-1] == pattern.rsplit("/", 1)[-1] and n not in close]
            out.append({"pattern": pattern, "did_you_mean": (close + leaf)[:3]})
        return out

    def default_patterns(self) -> list[str]:
        patterns = ["loss"]
        for band in checks.bands(self.config):
            if band["metric"] not in patterns:
                patterns.append(band["metric"])
        return patterns

    def bands(self) -> list[dict[str, Any]]:
        return checks.bands(self.config)

    def current_epoch(self) -> int | None:
        for record in reversed(self.train[-5:]):
            epoch = record.get("epoch")
            if isinstance(epoch, int):
                return epoch
        return None

    # ----------------------------------------------------------------------------------------- status

    def current_end(self) -> dict[str, Any] | None:
        """The run_end of this attempt; a resumed run's folder still holds the run_end of the attempt before it
        until the new trainer writes its run_start."""
        end = self.run_end
        started = (self.manifest or {}).get("started_at")
        if end is not None and isinstance(started, (int, float)) and isinstance(end.get("time"), (int, float)) \
                and end["time"] < started:
            return None
        return end

    def status(self) -> str:
        end = self.current_end()
        if end is not None:
            return str(end.get("status") or "finished")
        if self._process_alert is not None:
            return "crashed"
        manifest_status = (self.manifest or {}).get("status")
        if manifest_status:
            return str(manifest_status)
        return "running" if self.run_start is not None else "unknown"

    def check_process(self, now: float, every_s: float = 10.0) -> None:
        """Is the run's process or container still there? Only while it should be running."""
        if now - self._process_checked < every_s:
            return
        self._process_checked = now
        from bevctl import runs
        from bevctl.watch.liveness import LIVE, gone_alert

        self.manifest = runs.read_manifest(self.run_dir) or self.manifest
        manifest = self.manifest or {}
        if self.current_end() is not None or not manifest or manifest.get("status") not in LIVE:
            self._process_alert = None
            return
        self._process_alert = gone_alert(self.run_dir, manifest)

    # ----------------------------------------------------------------------------------------- snapshot

    def alerts(self, now: float) -> list[dict[str, Any]]:
        if "loss" in self.train_names:
            self.scanner.scan_loss(self.series("loss"))
        if "grad_norm" in self.train_names:
            self.scanner.scan_grad_norm(self.series("grad_norm"))
        out = self.scanner.alerts()
        status = self.status()
        if status not in final_statuses():
            interval = alerts_mod.median_interval([r.get("time") for r in self.train[-50:]], self.arrivals)
            stalled = alerts_mod.stall_alert(interval, now - self.last_update)
            if stalled is not None:
                out.append(stalled)
        if self._process_alert is not None:
            out.append(dict(self._process_alert))
        ended = alerts_mod.end_alert(self.current_end(), status)
        if ended is not None:
            out.append(ended)
        for logged in self.logged_alerts[-5:]:
            out.append(alerts_mod.alert(logged.get("level", "warning"), "logged", str(logged.get("message", ""))))
        for unknown in self.unknown_patterns():
            hint = ", ".join(unknown["did_you_mean"]) or ", ".join(self.available()[:6])
            out.append(alerts_mod.alert("warning", "unknown_metric", f"no metric matches {unknown['pattern']!r}; "
                                                                     f"did you mean: {hint}"))
        return out

    def verification(self) -> list[dict[str, Any]]:
        started = bool(self.train)
        rows = checks.gca_rows(self.config, self.gca, started)
        loads = list(self.checkpoints) or ([self.text_checkpoint] if self.text_checkpoint is not None else [])
        rows += checks.checkpoint_rows(self.config, loads, started)
        if "loss" in self.train_names:
            count = len(self.series("loss").values)
            bad = self.scanner.nonfinite_loss
            rows.append(checks.row("losses finite", "fail", f"{bad} of {count} logged losses are NaN/Inf") if bad
                        else checks.row("losses finite", "ok", f"all {count} logged losses finite"))
        rows += checks.band_rows(self, self.current_epoch())
        return rows

    def metric_summary(self, name: str) -> dict[str, Any]:
        series = self.series(name)
        values = series.values
        smoothed = series.smoothed
        trend = None
        if len(smoothed) >= 3:
            back = smoothed[-min(len(smoothed) - 1, max(1, len(smoothed) // 5), 200) - 1]
            now = smoothed[-1]
            if _isfinite(back) and _isfinite(now) and back != 0:
                trend = (now - back) / abs(back)
        epoch = series.epochs[-1] if series.epochs else None
        is_val = name in self.val_names and name not in self.train_names
        return {
            "source": "val" if is_val else "train",
            "count": len(values),
            "last": _finite(values[-1]) if values else None,
            "last_finite": bool(values) and _isfinite(values[-1]),
            "min": series.lo,
            "max": series.hi,
            "smoothed": None if is_val else (_finite(smoothed[-1]) if smoothed else None),
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
        self.check_process(now)
        chosen = self.chosen_metrics()
        alerts = self.alerts(now)  # scans the loss first: the verification's finite-loss row reads the scan
        verification = self.verification()
        manifest = self.manifest or {}
        status = self.status()
        return {
            "run": {
                "name": manifest.get("name") or self.run_dir.name,
                "path": str(self.path),
                "phase": manifest.get("phase") or (self.run_start or {}).get("phase") or self.config.get("name"),
                "status": status,
                "where": manifest.get("where"),
                "last_update": self.last_update,
            },
            "progress": progress(self.train, self.run_start, self.config, self.meta, status),
            "metrics": {name: self.metric_summary(name) for name in chosen},
            "available_metrics": self.available(),
            "unknown_metrics": self.unknown_patterns(),
            "verification": verification,
            "validation": self.validation(),
            "alerts": alerts,
            "ingest": stats or {},
            "ok": not any(row["status"] == "fail" for row in verification),
        }


def _isfinite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def _finite(value: float | None) -> float | None:
    return value if value is not None and _isfinite(value) else None
