from typing import List

import typer

from bevctl.commands._stub import not_yet


def start(
    phase: str = typer.Argument(..., help="Shipped phase name (demo, phase3, phase4a, ...) or a phase YAML path."),
    set_: List[str] = typer.Option([], "--set", help="Override a phase value: key.path=value (repeatable)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Start without asking for confirmation."),
) -> None:
    """Preflight, confirm and launch a training phase."""
    not_yet("start", "start/stop/runs")
