from typing import Optional

import typer

from bevctl.commands._stub import not_yet


def doctor(
    phase: Optional[str] = typer.Option(None, "--phase", help="Tune the checks to this phase."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check the environment: torch, GPUs, launcher, docker, data, weights, disk."""
    not_yet("doctor", "doctor")
