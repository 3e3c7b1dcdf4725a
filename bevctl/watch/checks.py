"""Verification rows: what the seed's user greps the log for (task-specific GCA and its parameter counts, which
checkpoint keys were missing, unexpected or of another shape) and whether the metrics follow the phase's
expectation bands. Each row is `{"check", "status": ok|fail|pending|info, "detail", ...}`."""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path
from typing import Any

from bevctl.runs import compress_keys
from bevctl.watch.records import number
from bevctl.watch.series import lower_is_better

# The full model's GCA parameter count per task (the seed's log: `[object] GCA: params: 131,072`).
FULL_GCA_PER_TASK = 131_072


def row(check: str, status: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"check": check, "status": status, "detail": detail, **extra}


def bands(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The phase's expectation bands from its config (plain data: no pydantic at start-up)."""
    out = []
    for band in config.get("expectations") or []:
        try:
            e0, e1 = (int(x) for x in band["epochs"])
            out.append({"metric": str(band["metric"]), "epochs": (e0, e1), "start": float(band["start"]),
                        "end": float(band["end"]), "tolerance": float(band.get("tolerance", 0.02))})
        except (KeyError, TypeError, ValueError):
            continue
    return out


# --------------------------------------------------------------------------------------------- GCA


def gca_rows(config: dict[str, Any], gca: dict[str, Any] | None, started: bool) -> list[dict[str, Any]]:
    model = config.get("model") or {}
    want_mode = model.get("gca")
    if want_mode == "none" or (not config and gca is None):
        return []
    if gca is None:
        status = "fail" if started else "pending"
        return [row("task-specific GCA", status, "no GCA line logged" + ("" if started else " yet"))]
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
    expected = expected_gca_count(model, bool(config))
    if expected is not None and [t for t, c in params.items() if c != expected]:
        problems.append(f"expected {expected:,} per task")
    detail = f"mode {mode or '?'}: " + (", ".join(parts) if parts else "no counts")
    if problems:
        return [row("task-specific GCA", "fail", detail + " (" + "; ".join(problems) + ")")]
    return [row("task-specific GCA", "ok", detail)]


def expected_gca_count(model: dict[str, Any], has_config: bool) -> int | None:
    config = model.get("config", "full" if not has_config else None)
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


# --------------------------------------------------------------------------------------------- checkpoints


def _shape(shape: Any) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]" if isinstance(shape, (list, tuple)) else str(shape)


def _mismatch_text(item: Any) -> str:
    if isinstance(item, dict):
        return f"{item.get('key')} checkpoint {_shape(item.get('checkpoint'))} vs model {_shape(item.get('model'))}"
    return str(item)


def checkpoint_rows(config: dict[str, Any], loads: list[dict[str, Any]], started: bool) -> list[dict[str, Any]]:
    expect = [str(g) for g in config.get("expect_missing") or []]
    allow_unexpected = [str(g) for g in config.get("allow_unexpected") or []]
    if not loads:
        if config.get("load_from"):
            status = "fail" if started else "pending"
            return [row("checkpoint loaded", status, f"no load of {config['load_from']} logged"
                        + ("" if started else " yet"))]
        return []
    rows = []
    for load in loads:
        how = str(load.get("how") or "load_from")
        missing = [str(k) for k in load.get("missing") or []]
        shown = [str(g) for g in load.get("missing_globs") or []] or compress_keys(missing)
        name = Path(str(load.get("path") or "?")).name
        problems = []
        if how in ("load_from", "resume") and config:
            surprising = [k for k in missing if not any(fnmatch.fnmatchcase(k, g) for g in expect)]
            if surprising:
                problems.append(f"{len(surprising)} unexpected missing key(s): "
                                + ", ".join(compress_keys(surprising)[:4]))
        unexpected = [str(k) for k in load.get("unexpected") or []
                      if not any(fnmatch.fnmatchcase(str(k), g) for g in allow_unexpected)]
        if unexpected:
            named = unexpected if len(unexpected) <= 4 else compress_keys(unexpected)
            problems.append(f"{len(unexpected)} unexpected key(s) in checkpoint: " + ", ".join(named[:4])
                            + (", ..." if len(named) > 4 else ""))
        mismatched = list(load.get("mismatched") or [])
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(map(_mismatch_text, mismatched[:3]))
                            + ("; ..." if len(mismatched) > 3 else ""))
        if load.get("ok") is False and not problems:
            problems.append("loader reported a failure")
        what = f"{name} ({how})"
        what += f", missing {', '.join(shown[:4])}" if shown else ", nothing missing"
        if problems:
            rows.append(row("checkpoint loaded", "fail", what + ": " + "; ".join(problems)))
        elif missing and not config:
            rows.append(row("checkpoint loaded", "info", what + " (no phase to compare against: --phase PHASE)"))
        else:
            rows.append(row("checkpoint loaded", "ok", what + (" - all expected" if missing else "")))
    return rows


# --------------------------------------------------------------------------------------------- bands


def band_at(metric_bands: list[dict[str, Any]], epoch: int | None) -> dict[str, Any] | None:
    if epoch is None:
        return None
    for band in metric_bands:
        e0, e1 = band["epochs"]
        if e0 <= epoch < e1:
            return band
    for band in metric_bands:
        if band["epochs"][1] == epoch:
            return band
    return None


def band_rows(state: Any, epoch: int | None) -> list[dict[str, Any]]:
    """One row per banded metric: the epoch mean (train) or the last validation value against the band."""
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for band in bands(state.config):
        by_metric.setdefault(band["metric"], []).append(band)
    rows = []
    for metric, metric_bands in by_metric.items():
        is_val = metric in state.val_names or (metric not in state.train_names and not metric.startswith("loss"))
        if is_val:
            record = state.val[-1] if state.val else None
            at = record.get("epoch") if record else None
            value = number(record.get(metric)) if record else None
        else:
            at = epoch
            value = state.series(metric).epoch_mean(epoch) if metric in state.train_names else None
        band = band_at(metric_bands, at)
        if band is None:
            upcoming = min((b["epochs"][0] for b in metric_bands), default=None)
            if at is None or (upcoming is not None and at < upcoming):
                rows.append(row(f"band {metric}", "pending", f"first band from epoch {upcoming}"))
            continue
        e0, e1 = band["epochs"]
        expected = band["start"] + (band["end"] - band["start"]) * (at - e0) / (e1 - e0)
        tol = band["tolerance"]
        if value is None:
            rows.append(row(f"band {metric}", "pending", f"epoch {at}: no value yet (expect {expected:.4g})"))
            continue
        if lower_is_better(metric):
            good, rule = value <= expected + tol, f"<= {expected:.4g} + {tol:g}"
        else:
            good, rule = value >= expected - tol, f">= {expected:.4g} - {tol:g}"
        if not math.isfinite(value):
            good = False
        what = "epoch mean" if not is_val else "val"
        rows.append(row(f"band {metric}", "ok" if good else "fail",
                        f"epoch {at} {what} {value:.4g} {rule}: {'on track' if good else 'off track'}",
                        expected=expected, value=value, epoch=at))
    return rows
