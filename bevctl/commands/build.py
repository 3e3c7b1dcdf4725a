from typing import List, Optional

import typer

from bevctl.commands._stub import not_yet


def build(
    tag: Optional[str] = typer.Option(None, "--tag", help="Image tag (default from the phase container settings)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build without the layer cache."),
    build_arg: List[str] = typer.Option([], "--build-arg", help="KEY=VALUE build argument (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the equivalent docker build command."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Build the training image from docker/Dockerfile."""
    not_yet("build", "containers")
