"""What `bevctl watch` does with its options (the Typer signature lives in `bevctl/commands/watch.py`)."""

from __future__ import annotations

import math
import sys
from typing import Any

from bevctl.errors import CHECK_FAILED, OK


def _clean(value: Any) -> Any:
    """JSON without NaN/Infinity (strict parsers such as jq reject them): non-finite numbers become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def main(targets: list[str], metrics: list[str], smooth: float, once: bool, json_out: bool, plot: str | None,
         poll: bool, runs_root: str | None) -> int:
    from bevctl.watch.session import Session, resolve_targets

    paths = resolve_targets(targets, runs_root)
    sessions = [Session(path, metrics, smooth) for path in paths]
    live = not (once or json_out or plot)
    if live and sys.stdout.isatty():
        from bevctl.console import out
        from bevctl.watch.dashboard import run_live

        run_live(sessions, out(), poll=poll)
        return OK
    for session in sessions:
        session.poll(force_scan=True)
    snaps = [session.snapshot() for session in sessions]
    if plot:
        from bevctl.watch.plot import write_plot

        write_plot(sessions, snaps, plot)
        from bevctl.console import err

        err().print(f"wrote {plot}")
    if json_out:
        from bevctl.console import print_json
        from bevctl.watch.state import SNAPSHOT_SCHEMA

        print_json(_clean({"schema": SNAPSHOT_SCHEMA, "runs": snaps}))
    elif once or live:  # live without a terminal: one snapshot, like --once
        from bevctl.console import out
        from bevctl.watch.dashboard import render

        console = out()
        console.print(render(sessions, snaps, console))
    for session in sessions:
        session.close()
    return CHECK_FAILED if (once or json_out) and not all(s["ok"] for s in snaps) else OK
