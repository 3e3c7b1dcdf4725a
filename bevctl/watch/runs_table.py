"""`bevctl runs`: one row per run with its status (from the run contract's one authority), where it is, its
last loss and its last validation mAP / NDS / mIoU; sortable, and the same rows as JSON."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from bevctl.errors import UsageError
from bevctl.watch.progress import ago

HEADLINE = {"map": "object/map", "nds": "object/nds", "miou": "map/mean/iou@max"}
SORT_KEYS = ("started", "name", "status", "loss", "map", "nds", "miou")
STATUS_STYLE = {"running": "green", "finished": "cyan", "stopped": "yellow", "crashed": "bold red",
                "failed": "bold red", "unreadable": "bold red", "created": "dim"}
BACK_LIMIT = 16 << 20  # bytes read backwards for the last `val` event (a long run logs it every few epochs)


def last_val(events: Path, chunk: int = 1 << 20) -> dict[str, Any]:
    """The newest `val` event of events.jsonl, reading backwards from its end (never the whole file)."""
    try:
        with open(events, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            tail = b""
            pos = end
            while pos > 0 and end - pos < BACK_LIMIT:
                pos = max(0, pos - chunk)
                f.seek(pos)
                data = f.read(min(chunk, end - pos)) + tail
                lines = data.split(b"\n")
                tail = lines[0] if pos > 0 else b""  # a line cut by the chunk border waits for the next chunk
                for line in reversed(lines[1:] if pos > 0 else lines):
                    if b'"val"' not in line:
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("kind") == "val":
                        return event
    except OSError:
        pass
    return {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def collect(root: Path | None) -> list[dict[str, Any]]:
    from bevctl import runs

    infos = runs.list_runs(root)
    for info in infos:
        val = last_val(Path(info["run_dir"]) / runs.EVENTS)
        info["loss"] = _number(info.get("loss"))
        info["val_epoch"] = val.get("epoch")
        for short, key in HEADLINE.items():
            info[short] = _number(val.get(key))
    return infos


def sort_rows(infos: list[dict[str, Any]], key: str, reverse: bool = False) -> list[dict[str, Any]]:
    """`started` newest first; `loss` lowest first; mAP/NDS/mIoU highest first; runs without the value last."""
    if key not in SORT_KEYS:
        raise UsageError(f"cannot sort by {key!r}", fix=f"--sort takes one of: {', '.join(SORT_KEYS)}")
    if key == "started":
        return infos[::-1] if reverse else infos  # `list_runs` gives newest first
    if key in ("name", "status"):
        return sorted(infos, key=lambda i: str(i.get(key) or ""), reverse=reverse)
    have = [i for i in infos if i.get(key) is not None]
    lacking = [i for i in infos if i.get(key) is None]
    best_first = sorted(have, key=lambda i: i[key], reverse=key != "loss")
    return (best_first[::-1] if reverse else best_first) + lacking


def render(infos: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from bevctl.console import err, out

    if not infos:
        err().print("no runs yet: start one with [bold]bevctl start demo --yes[/]")
        return
    table = Table(header_style="bold", box=None, padding=(0, 1))
    for column in ("run", "phase", "status", "epoch", "loss", "mAP", "NDS", "mIoU", "started", "where"):
        numeric = column in ("epoch", "loss", "mAP", "NDS", "mIoU")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "run",
                         overflow="fold" if column == "run" else "ellipsis")
    now = time.time()
    for info in infos:
        status = str(info.get("status") or "?")
        style = STATUS_STYLE.get(status, "")
        if status == "unreadable":  # one row; the reason is printed under the table
            table.add_row(escape(info["name"]), "-", f"[{style}]{status}[/]", *["-"] * 7)
            continue
        shown = status + (f" ({info['exit_code']})" if info.get("exit_code") not in (None, 0) else "")
        epoch = "-"
        if info.get("epoch") is not None:
            epoch = f"{info['epoch']}" + (f"/{info['epochs']}" if info.get("epochs") else "")
            if info.get("iter") is not None and info.get("iters_per_epoch"):
                epoch += f" {info['iter']}/{info['iters_per_epoch']}"
        started = ago(now - info["started_at"]) if isinstance(info.get("started_at"), (int, float)) else "-"
        where = str(info.get("where") or "-")
        if info.get("container_id"):
            where += f" {str(info['container_id'])[:12]}"
        elif info.get("pid") and status in ("running", "created"):
            where += f" pid {info['pid']}"
        table.add_row(escape(str(info["name"])), escape(str(info.get("phase") or "-")),
                      f"[{style}]{escape(shown)}[/]" if style else escape(shown), epoch, _fmt(info.get("loss")),
                      _fmt(info.get("map")), _fmt(info.get("nds")), _fmt(info.get("miou")), started, where)
    out().print(table)
    for info in infos:
        if info.get("status") in ("unreadable", "failed") and info.get("reason"):
            err().print(f"[red]{escape(info['name'])} {info['status']}[/]: {escape(str(info['reason']))}",
                        soft_wrap=True)
        if info.get("status") == "crashed" and info.get("last_log_lines"):
            err().print(f"[bold red]{escape(info['name'])} crashed[/]: {escape(str(info.get('reason') or ''))}; "
                        "last log lines:")
            for line in info["last_log_lines"]:
                err().print("  " + escape(line), soft_wrap=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
