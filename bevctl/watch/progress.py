"""Where a run is (epoch, iteration, speed, ETA) from its newest records, and the one-line form of it that
`bevctl start --wait` prints while it waits (the same numbers `bevctl watch` shows)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bevctl.watch.records import number

RECENT = 20  # records used for step time, it/s and data_time ratio


def final_statuses() -> tuple[str, ...]:
    from bevctl import runs

    return tuple(runs.FINAL_STATUSES)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def progress(train: list[dict[str, Any]], run_start: dict[str, Any] | None, config: dict[str, Any],
             meta: dict[str, Any], status: str) -> dict[str, Any]:
    last = train[-1] if train else {}
    recent = train[-RECENT:]
    steps = [v for v in (number(r.get("step_time")) for r in recent) if v is not None and v > 0]
    datas = [v for v in (number(r.get("data_time")) for r in recent) if v is not None and v >= 0]
    step = statistics.median(steps) if steps else None
    epoch, it = last.get("epoch"), last.get("iter")
    per_epoch = last.get("iters_per_epoch") or (run_start or {}).get("iters_per_epoch") or meta.get("iters_per_epoch")
    epochs = (run_start or {}).get("epochs") or (config.get("train") or {}).get("epochs")
    step_no = last.get("global_step")
    if it is None and isinstance(step_no, int) and isinstance(epoch, int) and per_epoch:
        it = step_no - (epoch - 1) * int(per_epoch)  # mmengine's scalars.json logs only the global iteration
    eta = None
    if status in final_statuses():
        eta = None  # an ended run has no ETA: the header shows its state instead
    elif step and isinstance(epoch, int) and isinstance(it, int) and per_epoch and epochs:
        eta = max(0.0, ((int(epochs) - epoch) * int(per_epoch) + (int(per_epoch) - it)) * step)
    elif last.get("eta") or meta.get("eta"):
        eta = parse_eta(str(last.get("eta") or meta.get("eta")))
    return {
        "epoch": epoch,
        "epochs": epochs,
        "iter": it,
        "iters_per_epoch": per_epoch,
        "global_step": last.get("global_step"),
        "lr": _finite(number(last.get("lr", next((v for k, v in last.items() if k.startswith("lr_")), None)))),
        "memory_mb": _finite(number(last.get("memory"))),
        "step_time": step,
        "it_per_s": (1.0 / step) if step else None,
        "data_time_ratio": (statistics.median(datas) / step) if (step and datas) else None,
        "eta_seconds": eta,
        "ended": status in final_statuses(),
    }


def parse_eta(text: str) -> float | None:
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


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:d}:{minutes:02d}:{secs:02d}"


def fraction_done(prog: dict[str, Any]) -> tuple[float, float] | None:
    """(done, total) iterations over the whole run (or the current epoch when the epoch count is unknown)."""
    epoch, epochs, it, per = prog["epoch"], prog["epochs"], prog["iter"], prog["iters_per_epoch"]
    if epoch is None or not per or it is None:
        return None
    if epochs:
        return (epoch - 1) * float(per) + it, float(epochs) * float(per)
    return float(it), float(per)


def progress_line(snap: dict[str, Any], width: int = 30) -> str:
    """`epoch 2/8 iter 5/10 [#######.......]  41%  ETA 0:01:10  loss 3.21` (or the state of an ended run)."""
    prog, status = snap["progress"], snap["run"]["status"]
    if prog["epoch"] is None:
        return f"{snap['run']['name']}: {status}, waiting for the first logged step"
    where = f"epoch {prog['epoch']}" + (f"/{prog['epochs']}" if prog["epochs"] else "")
    if prog["iters_per_epoch"]:
        where += f" iter {prog['iter']}/{prog['iters_per_epoch']}"
    done = fraction_done(prog)
    bar = ""
    if done is not None:
        share = min(1.0, done[0] / done[1]) if done[1] else 0.0
        filled = int(round(share * width))
        bar = f" [{'#' * filled}{'.' * (width - filled)}] {share:4.0%}"
    tail = f"  {status}" if prog["ended"] else f"  ETA {format_eta(prog['eta_seconds'])}"
    loss = (snap["metrics"].get("loss") or {}).get("last")
    if loss is not None:
        tail += f"  loss {loss:.4g}"
    return where + bar + tail


def ago(seconds: float) -> str:
    """How long ago, in the coarsest unit that still reads well ("45s ago", "12m ago", "5h ago", "3d ago")."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 172800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"
