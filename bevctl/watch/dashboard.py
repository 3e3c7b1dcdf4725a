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

from bevctl.watch.chart import Curve, braille_chart
from bevctl.watch.progress import ago, format_eta, fraction_done
from bevctl.watch.session import Session

MAX_FPS = 4
IDLE_REDRAW_S = 5.0
MARKS = {"ok": ("✓", "green"), "fail": ("✗", "bold red"), "pending": ("…", "yellow"), "info": ("•", "cyan")}
LEVEL_STYLE = {"error": "bold red", "warning": "yellow"}
OVERLAY_STYLES = ("bold magenta", "bold yellow", "bold green", "bold blue")
_charts: dict[tuple[int, str], tuple[tuple, Text]] = {}


def _num(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return fmt.format(value)


def _eta(seconds: float | None) -> str:
    return format_eta(seconds)


def header(snap: dict[str, Any], follow_mode: str, now: float, width: int) -> RenderableType:
    run, prog = snap["run"], snap["progress"]
    status = run["status"]
    status_style = {"running": "green", "finished": "cyan", "crashed": "bold red", "failed": "bold red",
                    "stopped": "yellow"}.get(status, "white")
    top = Text.assemble(
        (run["name"], "bold"), "  phase ", (str(run.get("phase") or "-"), "bold"), "  ", (status, status_style),
        ("  updated " + ago(now - run["last_update"]), "dim"), ("  " + follow_mode, "dim") if follow_mode else "",
    )
    lines: list[RenderableType] = [top]
    epoch, epochs, it, per = prog["epoch"], prog["epochs"], prog["iter"], prog["iters_per_epoch"]
    if epoch is not None:
        done = fraction_done(prog)
        where = f"epoch {epoch}" + (f"/{epochs}" if epochs else "") + (f"  iter {it}/{per}" if per else "")
        row = Table.grid(padding=(0, 1))
        row.add_column(no_wrap=True)
        row.add_column(ratio=1)
        row.add_column(no_wrap=True)
        total = done[1] if done else 1.0
        bar = ProgressBar(total=total or 1.0, completed=min(done[0], total) if done else 0.0, width=max(10, width // 3))
        pct = f"{100 * done[0] / total:5.1f}%" if done and total else ""
        row.add_row(Text(where), bar, Text(pct))
        lines.append(row)
    else:
        lines.append(Text("waiting for the first logged step", style="dim"))
        return Panel(Group(*lines), title="bevctl watch", title_align="left", border_style="blue")
    # an ended run has no ETA: its state says where it stopped (the alerts say why)
    when = ("ETA ", (_eta(prog["eta_seconds"]), "bold")) if not prog.get("ended") else \
        ("", (status, status_style))
    facts = Text.assemble(
        *when,
        "   lr ", _num(prog["lr"], "{:.3e}"),
        "   it/s ", _num(prog["it_per_s"], "{:.3g}"),
        "   mem ", _num(prog["memory_mb"], "{:.0f}") + " MB",
        "   data/step ", (_num(prog["data_time_ratio"], "{:.0%}"),
                          "bold red" if (prog["data_time_ratio"] or 0) > 0.5 else ""),
    )
    lines.append(facts)
    return Panel(Group(*lines), title="bevctl watch", title_align="left", border_style="blue")


def x_range(session: Session, names: list[str]) -> tuple[float, float] | None:
    """The x span of a run's charted metrics, so its charts share one x axis."""
    spans = []
    for name in names:
        xs = session.state.series(name).positions(session.state.iters_per_epoch())
        if xs:
            spans.append((min(xs), max(xs)))
    return (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None


def metric_panel(session: Session, name: str, summary: dict[str, Any], width: int, height: int,
                 view: dict[str, Any] | None = None, span: tuple[float, float] | None = None) -> Panel:
    view = view or {}
    state = session.state
    series = state.series(name)
    is_val = summary["source"] == "val"
    curves = [Curve(series.values, series.positions(state.iters_per_epoch()), None if is_val else series.smoothed,
                    points=is_val)]
    for i, other in enumerate(view.get("overlays") or []):
        if name in other.state.train_names or name in other.state.val_names:
            theirs = other.state.series(name)
            curves.append(Curve(theirs.values, theirs.positions(other.state.iters_per_epoch()),
                                None if is_val else theirs.smoothed, points=is_val,
                                style=OVERLAY_STYLES[i % len(OVERLAY_STYLES)], raw_style="grey30"))
    # Charts cost O(points); an idle redraw (the clock) or another panel's change reuses the last drawing.
    key = (tuple(len(c.values) for c in curves), width, height, view.get("log_y"), span)
    cached = _charts.get((id(session), name))
    if cached is not None and cached[0] == key:
        chart = cached[1]
    else:
        chart = braille_chart(curves, width - 4, height, view.get("log_y"), x_range=span)
        _charts[(id(session), name)] = (key, chart)
    last = _num(summary["last"]) if summary["last_finite"] or not series.values else str(series.values[-1])
    if is_val:
        subtitle = f"last {last}  best {_num(summary['max'])}  n={summary['count']} (measured points)"
    else:
        trend = summary.get("trend")
        arrow = "→" if trend is None or abs(trend) < 0.01 else ("↓" if trend < 0 else "↑")
        subtitle = (f"last {last}  ema {_num(summary['smoothed'])}  min {_num(summary['min'])}  "
                    f"trend {arrow}{'' if trend is None else f'{abs(trend):.1%}'}  n={summary['count']}")
    title = f"[bold]{name}[/] ({summary['source']})"
    if view.get("overlays"):
        names = [session.path.name] + [o.path.name for o in view["overlays"]]
        styles = ["bold cyan"] + list(OVERLAY_STYLES)
        title += "  " + "  ".join(f"[{st}]{n}[/]" for n, st in zip(names, styles))
    return Panel(chart, title=title, title_align="left", subtitle=subtitle, subtitle_align="right",
                 border_style="grey50")


def verification_panel(rows: list[dict[str, Any]], compact: bool = False) -> Panel:
    """One row per check; `compact` (a short screen) keeps each to one line, cut with an ellipsis."""
    if compact and rows:
        pad = max(len(r["check"]) for r in rows)
        lines = []
        for r in rows:
            mark, style = MARKS.get(r["status"], ("?", ""))
            lines.append(Text.assemble((mark, style), " ", (r["check"].ljust(pad), "bold"), " ", r["detail"],
                                       no_wrap=True, overflow="ellipsis"))
        return Panel(Group(*lines), title="verification", title_align="left", border_style="green")
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


def validation_panel(val: dict[str, Any], compact: bool = False) -> Panel:
    metrics = val["metrics"]
    head = Text.assemble(f"epoch {val.get('epoch')}  ")
    for key, label in (("object/map", "mAP"), ("object/nds", "NDS"), ("map/mean/iou@max", "mIoU")):
        if key in metrics:
            head.append(f"{label} ", style="bold")
            head.append(f"{_num(metrics[key], '{:.4f}')}   ")
    parts: list[RenderableType] = [head]
    if compact:
        return Panel(Group(*parts), title="validation", title_align="left", border_style="magenta")
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


def _height(renderable: RenderableType, console: Console, width: int) -> int:
    return len(console.render_lines(renderable, console.options.update(width=width), pad=False))


def render(sessions: list[Session], snaps: list[dict[str, Any]], console: Console, follow_mode: str = "",
           live: bool = False, now: float | None = None, view: dict[str, Any] | None = None) -> RenderableType:
    """Header, charts, verification, validation and alerts per run. Live, the whole view must fit the screen
    (Live cannot redraw what scrolled off): the panels are measured first and the charts get what is left,
    shrinking, then dropping, before any panel is cut."""
    now = time.time() if now is None else now
    width = console.size.width

    def panels_of(compact: bool) -> list[list[RenderableType]]:
        out = []
        for snap in snaps:
            panels: list[RenderableType] = [header(snap, follow_mode, now, width),
                                            verification_panel(snap["verification"], compact)]
            if snap["validation"]:
                panels.append(validation_panel(snap["validation"], compact))
            if snap["alerts"]:
                panels.append(alerts_panel(snap["alerts"]))
            out.append(panels)
        return out

    fixed = panels_of(False)
    chart_h = 6
    counts = [len(snap["metrics"]) for snap in snaps]
    if live:
        def room_left(parts: list[list[RenderableType]]) -> int:
            return console.size.height - 1 - sum(_height(p, console, width) for run in parts for p in run)

        room = room_left(fixed)
        if room < 5 * len(snaps) and any(counts):  # not one small chart per run: one line per check instead
            fixed = panels_of(True)
            room = room_left(fixed)
        wanted = sum(counts)
        chart_h = max(2, min(6, room // max(1, wanted) - 3))  # a chart panel: borders, x axis, chart_h rows
        fit = max(0, room // (chart_h + 3))
        counts = [min(c, fit // max(1, len(snaps))) for c in counts]
    parts: list[RenderableType] = []
    for session, snap, panels, count in zip(sessions, snaps, fixed, counts):
        parts.append(panels[0])  # the header, then the charts, then the panels
        names = list(snap["metrics"])[:count]
        span = x_range(session, names)
        for name in names:
            parts.append(metric_panel(session, name, snap["metrics"][name], width, chart_h, view, span))
        parts.extend(panels[1:])
    return Group(*parts)


def run_live(sessions: list[Session], console: Console, poll: bool = False,
             view: dict[str, Any] | None = None) -> None:
    """Follow until Ctrl-C: wake on file events (or the poll timer), redraw when something changed."""
    from rich.live import Live

    from bevctl.watch.follow import Waker

    overlays = (view or {}).get("overlays") or []
    folders = sorted({f for s in sessions + overlays for f in s.follower.folders})
    waker = Waker(folders, poll=poll)
    mode = "following: file events" if waker.mode == "events" else f"following: polling {waker.poll_s:g}s"
    if waker.reason and not poll:
        mode += f" ({waker.reason})"
    last_draw = 0.0
    last_scan = time.monotonic()
    try:
        for session in sessions + overlays:
            session.poll(force_scan=True)
        snaps = [s.snapshot() for s in sessions]
        with Live(render(sessions, snaps, console, mode, live=True, view=view), console=console, screen=False,
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
                    for session in sessions + overlays:
                        dirty |= session.poll(force_scan=rescan) > 0
                since = now - last_draw
                if (dirty and since >= 1.0 / MAX_FPS) or since >= IDLE_REDRAW_S:
                    snaps = [s.snapshot() for s in sessions]
                    live.update(render(sessions, snaps, console, mode, live=True, view=view), refresh=True)
                    last_draw, dirty = now, False
    finally:
        waker.close()
        for session in sessions:
            session.close()
