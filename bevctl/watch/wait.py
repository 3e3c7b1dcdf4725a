"""`bevctl start --wait`: block until a run ends while showing what `bevctl watch` shows in its header (progress
bar, ETA, last loss), then say how it ended and why."""

from __future__ import annotations

import time
from pathlib import Path

from bevctl.watch.progress import final_statuses, progress_line


def wait_for_run(run_dir: Path, poll: float = 1.0, quiet_s: float = 30.0) -> int:
    """Block until the run ends, showing what `bevctl watch` shows in its header (progress bar, ETA, last loss);
    on a terminal as a live line, otherwise one line per epoch or every `quiet_s`. Returns the run's exit code
    (0 for finished and stopped runs)."""
    from rich.live import Live
    from rich.markup import escape

    from bevctl.console import err
    from bevctl.watch.dashboard import header
    from bevctl.watch.session import Session

    console = err()
    session = Session(run_dir)
    last_printed, last_epoch = 0.0, None
    try:
        with Live(console=console, transient=True, auto_refresh=False, redirect_stdout=False,
                  redirect_stderr=False) if console.is_terminal else _Nothing() as live:
            while True:
                session.poll(force_scan=True)
                snap = session.snapshot()
                if console.is_terminal:
                    live.update(header(snap, "", time.time(), console.size.width), refresh=True)
                elif snap["progress"]["epoch"] is not None:
                    now = time.monotonic()
                    if snap["progress"]["epoch"] != last_epoch or now - last_printed >= quiet_s:
                        console.print(progress_line(snap), soft_wrap=True, highlight=False, markup=False)
                        last_printed, last_epoch = now, snap["progress"]["epoch"]
                if snap["run"]["status"] in final_statuses():
                    break
                time.sleep(poll)
    finally:
        session.close()
    from bevctl import runs

    info = runs.describe_run(run_dir)  # the run contract's verdict is the one reported
    status = str(info.get("status") or snap["run"]["status"])
    code = info.get("exit_code") or 0
    style = "green" if status == "finished" else "yellow" if status == "stopped" else "red"
    console.print(progress_line(snap), soft_wrap=True, highlight=False, markup=False)
    console.print(f"run [bold]{escape(snap['run']['name'])}[/] [{style}]{status}[/] (exit code {code})")
    said = []
    for alert in snap["alerts"]:
        if alert["level"] == "error" or alert["kind"].startswith("run_"):
            console.print(f"  {escape(alert['kind'])}: {escape(alert['message'])}", soft_wrap=True)
            said.append(alert["message"])
    reason = str(info.get("reason") or "")
    if status in ("failed", "crashed") and reason and not any(reason in message for message in said):
        console.print("  " + escape(reason), soft_wrap=True)
    if status == "crashed":
        for line in info.get("last_log_lines") or []:
            console.print("  " + escape(line), soft_wrap=True)
    if status in ("finished", "stopped"):
        return 0
    return int(code) or 1


class _Nothing:
    def __enter__(self) -> "_Nothing":
        return self

    def __exit__(self, *exc: object) -> None:
        return None
