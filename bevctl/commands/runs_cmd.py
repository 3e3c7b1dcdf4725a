import typer

from bevctl.commands._stub import not_yet


def runs(json_out: bool = typer.Option(False, "--json", help="Print the runs as JSON.")) -> None:
    """List runs with their status, progress and last loss."""
    not_yet("runs", "start/stop/runs")
