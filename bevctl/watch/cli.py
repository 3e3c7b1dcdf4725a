"""What `bevctl watch` does with its options (the Typer signature lives in `bevctl/commands/watch.py`)."""

from __future__ import annotations

import math
import sys
from typing import Any

from bevctl.errors import CHECK_FAILED, OK, UsageError


def _clean(value: Any) -> Any:
    """JSON without NaN/Infinity (strict parsers such as jq reject them): non-finite numbers become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def phase_config(name_or_path: str) -> dict[str, Any]:
    """A phase as the plain config dict run.json holds, so its expected-missing globs and bands apply to any log."""
    from bevctl.phases import load_phase

    return load_phase(name_or_path).model_dump(mode="json")


def _unknown_metrics(snaps: list[dict[str, Any]]) -> None:
    for snap in snaps:
        for unknown in snap.get("unknown_metrics") or []:
            close = unknown["did_you_mean"]
            available = snap["available_metrics"]
            shown = ", ".join(available[:12]) + (f" ... ({len(available)} in all)" if len(available) > 12 else "")
            raise UsageError(f"no metric matches {unknown['pattern']!r} in {snap['run']['name']}"
                             + (f"; did you mean {', '.join(close)}?" if close else ""),
                             fix=f"available: {shown}; -m takes a name, a prefix (loss/map) or a glob (loss/*/dice)")


def main(targets: list[str], metrics: list[str], smooth: float, once: bool, json_out: bool, plot: str | None,
         poll: bool, runs_root: str | None, phase: str | None = None, log_y: bool | None = None,
         compare: list[str] | None = None) -> int:
    from bevctl.watch.session import Session, resolve_targets

    config = phase_config(phase) if phase else None
    paths = resolve_targets(targets, runs_root)
    sessions = [Session(path, metrics, smooth, config) for path in paths]
    overlays = [Session(path, metrics, smooth, config) for path in resolve_targets(compare, runs_root)] \
        if compare else []
    view = {"log_y": log_y, "overlays": overlays}
    live = not (once or json_out or plot)
    if live and sys.stdout.isatty():
        from bevctl.console import out
        from bevctl.watch.dashboard import run_live

        run_live(sessions, out(), poll=poll, view=view)
        return OK
    for session in sessions + overlays:
        session.poll(force_scan=True)
    snaps = [session.snapshot() for session in sessions]
    if metrics:
        _unknown_metrics(snaps)
    if plot:
        from bevctl.watch.plot import write_plot

        write_plot(sessions, snaps, plot, view)
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
        console.print(render(sessions, snaps, console, view=view))
    for session in sessions + overlays:
        session.close()
    return CHECK_FAILED if (once or json_out) and not all(s["ok"] for s in snaps) else OK
