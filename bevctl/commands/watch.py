from typing import List, Optional

import typer

from bevctl.commands._stub import not_yet


def watch(
    runs: Optional[List[str]] = typer.Argument(None, help="Run names or paths (default: the newest run)."),
    metric: List[str] = typer.Option([], "--metric", "-m", help="Metric name, prefix or glob (repeatable)."),
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit."),
    json_out: bool = typer.Option(False, "--json", help="Print the snapshot as JSON."),
) -> None:
    """Follow a run's logs: live loss charts and verification panels."""
    not_yet("watch", "watch")
