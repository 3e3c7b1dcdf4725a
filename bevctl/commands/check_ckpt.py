from pathlib import Path
from typing import Optional

import typer

from bevctl.commands._stub import not_yet


def check_ckpt(
    checkpoint: Path = typer.Argument(..., help="Checkpoint file (.pth or .safetensors)."),
    phase: Optional[str] = typer.Option(None, "--phase", help="Take model and expectations from this phase."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate a checkpoint against the model's keys before launch."""
    not_yet("check-ckpt", "check-ckpt")
