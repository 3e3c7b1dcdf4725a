from pathlib import Path

import typer

from bevctl.commands._stub import not_yet

app = typer.Typer(help="Datasets: generate synthetic nuScenes-format data.", no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset into."),
    scenes: int = typer.Option(10, "--scenes", help="Number of scenes (official mini split names)."),
) -> None:
    """Generate a synthetic dataset in the real nuScenes layout."""
    not_yet("data synth", "data/trainer")
