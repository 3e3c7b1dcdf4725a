from typing import Optional

import typer

from bevctl.commands._stub import not_yet


def shell(
    run: Optional[str] = typer.Option(None, "--run", help="Open the shell in this run's container."),
    print_cmd: bool = typer.Option(False, "--print-cmd", help="Print the equivalent docker run line."),
) -> None:
    """Open an interactive shell in the project container (started if needed)."""
    not_yet("shell", "containers")
