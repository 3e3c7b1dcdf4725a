import typer

from bevctl.commands._stub import not_yet


def stop(run: str = typer.Argument(..., help="Run name or directory.")) -> None:
    """Stop a run: SIGTERM, wait for its final checkpoint."""
    not_yet("stop", "start/stop/runs")
