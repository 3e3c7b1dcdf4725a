"""The Rich view of a snapshot: header, charts, verification, validation and alerts.

The same renderable serves `--once` (printed once, no terminal needed) and the live view. The live view
redraws at most `MAX_FPS` times a second and only when something changed (or every `IDLE_REDRAW_S` for the
clock), with `screen=False` so the dashboard stays in the scrollback like `tail -f` output.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bevctl.watch.chart import braille_chart
from bevctl.watch.session import Session

MAX_FPS = 4
IDLE_REDRAW_S = 5.0
MARKS = {"ok": ("✓", "green"), "fail": ("✗", "bold red"), "pending": ("…", "yellow"), "info": ("•", "cyan")}
LEVEL_STYLE = {"error": "bold red", "warning": "yellow"}
_charts: dict[tuple[int, str], tuple[tuple[int, int, int], Text]] = {}


def _num(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return fmt.format(value)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:d}:{minutes:02d}:{secs:02d}"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 172800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def header(snap: dict[str, Any], follow_mode: str, now: float, width: int) -> RenderableType:
    run, prog = snap["run"], snap["progress"]
    status = run["status"]
    status_style = {"running": "green", "finished": "cyan", "crashed": "bold red", "failed": "bold red",
                    "stopped": "yellow"}.get(status, "white")
    top = Text.assemble(
        (run["name"], "bold"), "  phase ", (str(run.get("phase") or "-"), "bold"), "  ", (status, status_style),
        ("  updated " + _ago(now - run["last_update"]), "dim"), ("  " + follow_mode, "dim") if follow_mode else "",
    )
    lines: list[RenderableType] = [top]
    epoch, epochs, it, per = prog["epoch"], prog["epochs"], prog["iter"], prog["iters_per_epoch"]
    if epoch is not None:
        done = total = None
        if epochs and per and it is not None:
            total = float(epochs) * float(per)
            done = (epoch - 1) * float(per) + it
        elif per and it is not None:
            total, done = float(per), float(it)
        where = f"epoch {epoch}" + (f"/{epochs}" if epochs else "") + (f"  iter {it}/{per}" if per else "")
        row = Table.grid(padding=(0, 1))
        row.add_column(no_wrap=True)
        row.add_column(ratio=1)
        row.add_column(no_wrap=True)
        bar = ProgressBar(total=total or 1.0, completed=min(done or 0.0, total or 1.0), width=max(10, width // 3))
        pct = f"{100 * (done or 0) / total:5.1f}%" if total else ""
        row.add_row(Text(where), bar, Text(pct))
        lines.append(row)
    else:
        lines.append(Text("waiting for the first logged step", style="dim"))
        return Panel(Group(*lines), title="bevctl watch", title_align="left", border_style="blue")
    facts = Text.assemble(
        "ETA ", (_eta(prog["eta_seconds"]), "bold"),
        "   lr ", _num(prog["lr"], "{:.3e}"),
        "   it/s ", _num(prog["it_per_s"], "{:.3g}"),
        "   mem ", _num(prog["memory_mb"], "{:.0f}") + " MB",
        "   data/step ", (_num(prog["data_time_ratio"], "{:.0%}"),
                          "bold red" if (prog["data_time_ratio"] or 0) > 0.5 else ""),
    )
    lines.append(facts)
    return Panel(Group(*lines), title="bevctl watch", title_align="left", border_style="blue")


def metric_panel(session: Session, name: str, summary: dict[str, Any], width: int, height: int) -> Panel:
    series = session.state.series(name)
    # Charts cost O(points); an idle redraw (the clock) or another panel's change reuses the last drawing.
    key = (len(series.values), width, height)
    cached = _charts.get((id(session), name))
    if cached is not None and cached[0] == key:
        chart = cached[1]
    else:
        chart = braille_chart(series.values, series.smoothed, width - 4, height)
        _charts[(id(session), name)] = (key, chart)
    trend = summary.get("trend")
    arrow = "→" if trend is None or abs(trend) < 0.01 else ("↓" if trend < 0 else "↑")
    last = _num(summary["last"]) if summary["last_finite"] or not series.values else str(series.values[-1])
    subtitle = (f"last {last}  ema {_num(summary['smoothed'])}  min {_num(summary['min'])}  "
                f"trend {arrow}{'' if trend is None else f'{abs(trend):.1%}'}  n={summary['count']}")
    return Panel(chart, title=f"[bold]{name}[/] ({summary['source']})", title_align="left",
                 subtitle=subtitle, subtitle_align="right", border_style="grey50")


def verification_panel(rows: list[dict[str, Any]]) -> Panel:
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column()
    for row in rows:
        mark, style = MARKS.get(row["status"], ("?", ""))
        table.add_row(Text(mark, style=style), Text(row["check"], style="bold"), Text(row["detail"]))
    if not rows:
        table.add_row(Text("•", style="cyan"), Text("no checks", style="bold"), Text("nothing to verify yet"))
    return Panel(table, title="verification", title_align="left", border_style="green")


def validation_panel(val: dict[str, Any]) -> Panel:
    metrics = val["metrics"]
    head = Text.assemble(f"epoch {val.get('epoch')}  ")
    for key, label in (("object/map", "mAP"), ("object/nds", "NDS"), ("map/mean/iou@max", "mIoU")):
        if key in metrics:
            head.append(f"{label} ", style="bold")
            head.append(f"{_num(metrics[key], '{:.4f}')}   ")
    parts: list[RenderableType] = [head]
    per_class = {k.split("/")[1]: v for k, v in metrics.items()
                 if k.startswith("map/") and k.endswith("/iou@max") and k.split("/")[1] != "mean"}
    if per_class:
        parts.append(_pairs("IoU", per_class))
    ap = {k[len("object/"):-len("_ap_dist_2.0")]: v for k, v in metrics.items()
          if k.startswith("object/") and k.endswith("_ap_dist_2.0")}
    if ap:
        parts.append(_pairs("AP@2m", ap))
    return Panel(Group(*parts), title="validation", title_align="left", border_style="magenta")


def _pairs(label: str, values: dict[str, Any]) -> RenderableType:
    """`class value` items laid out in as many columns as fit (they never split across lines)."""
    from rich.columns import Columns

    items = [Text.assemble((label, "dim"))] + [Text.assemble(f"{name} ", (_num(v, "{:.3f}"), "bold"))
                                               for name, v in values.items()]
    return Columns(items, padding=(0, 3))


def alerts_panel(alerts: list[dict[str, Any]]) -> Panel:
    text = Text()
    for i, alert in enumerate(alerts):
        if i:
            text.append("\n")
        style = LEVEL_STYLE.get(alert["level"], "")
        text.append(f"{alert['level']:<7} ", style=style)
        text.append(f"{alert['kind']}: ", style="bold")
        text.append(alert["message"])
    return Panel(text, title="alerts", title_align="left", border_style="red")


def render(sessions: list[Session], snaps: list[dict[str, Any]], console: Console, follow_mode: str = "",
           live: bool = False, now: float | None = None) -> RenderableType:
    now = time.time() if now is None else now
    width = console.size.width
    parts: list[RenderableType] = []
    for session, snap in zip(sessions, snaps):
        parts.append(header(snap, follow_mode, now, width))
        names = list(snap["metrics"])
        chart_h = 6
        if live:
            # Fit the screen: Live cannot redraw what scrolled off, so charts shrink before the panels go.
            fixed = 6 + len(snap["verification"]) + 2 + (len(snap["alerts"]) + 2 if snap["alerts"] else 0)
            fixed += 8 if snap["validation"] else 0
            room = console.size.height - fixed * len(sessions)
            per_run = max(1, len(names))
            chart_h = max(2, min(6, room // max(1, per_run * len(sessions)) - 2))
            max_charts = max(1, room // (chart_h + 2) // max(1, len(sessions)))
            names = names[:max_charts]
        for name in names:
            parts.append(metric_panel(session, name, snap["metrics"][name], width, chart_h))
        parts.append(verification_panel(snap["verification"]))
        if snap["validation"]:
            parts.append(validation_panel(snap["validation"]))
        if snap["alerts"]:
            parts.append(alerts_panel(snap["alerts"]))
    return Group(*parts)


def run_live(sessions: list[Session], console: Console, poll: bool = False) -> None:
    """Follow until Ctrl-C: wake on file events (or the poll timer), redraw when something changed."""
    from rich.live import Live

    from bevctl.watch.follow import Waker

    folders = sorted({f for s in sessions for f in s.follower.folders})
    waker = Waker(folders, poll=poll)
    mode = "following: file events" if waker.mode == "events" else f"following: polling {waker.poll_s:g}s"
    if waker.reason and not poll:
        mode += f" ({waker.reason})"
    last_draw = 0.0
    last_scan = time.monotonic()
    try:
        for session in sessions:
            session.poll(force_scan=True)
        snaps = [s.snapshot() for s in sessions]
        with Live(render(sessions, snaps, console, mode, live=True), console=console, screen=False,
                  auto_refresh=False, transient=False, redirect_stdout=False, redirect_stderr=False,
                  vertical_overflow="crop") as live:
            dirty = False
            while True:
                since = time.monotonic() - last_draw
                woke = waker.wait(timeout=max(0.0, 1.0 / MAX_FPS - since) if dirty else 1.0)
                now = time.monotonic()
                # File events cover appends; a slow rescan still catches what they miss (new files, NFS).
                rescan = now - last_scan >= 2.0
                if rescan:
                    last_scan = now
                if woke or rescan or waker.mode == "poll":
                    for session in sessions:
                        dirty |= session.poll(force_scan=rescan) > 0
                since = now - last_draw
                if (dirty and since >= 1.0 / MAX_FPS) or since >= IDLE_REDRAW_S:
                    snaps = [s.snapshot() for s in sessions]
                    live.update(render(sessions, snaps, console, mode, live=True), refresh=True)
                    last_draw, dirty = now, False
    finally:
        waker.close()
        for session in sessions:
            session.close()
