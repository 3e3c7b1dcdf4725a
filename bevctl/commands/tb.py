from pathlib import Path
from typing import Annotated, List, Optional

import typer


def tb(
    runs: Annotated[Optional[List[str]], typer.Argument(
        metavar="RUN", help="Runs to show (default: every run under the runs folder).")] = None,
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port TensorBoard listens on.")] = 6006,
    host: Annotated[str, typer.Option(
        "--host", metavar="HOST", help="Address to bind (0.0.0.0 to reach it from elsewhere).")] = "127.0.0.1",
    runs_root: Annotated[Optional[Path], typer.Option(
        "--runs-root", metavar="DIR", help="Folder holding run directories (default: $BEVCTL_RUNS or runs/).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the TensorBoard command instead of running it.")] = False,
) -> None:
    """Start TensorBoard on the runs' event files (written by the trainer under runs/<name>/tb/).

    Scalars carry the same names as events.jsonl and `bevctl watch`; each evaluation adds the first validation
    sample's BEV map prediction beside its ground truth as an image. Needs the `tensorboard` package
    (pip install tensorboard, or the `train` extra).

    Examples:

      bevctl tb  # every run, http://127.0.0.1:6006

      bevctl tb demo-20261125-091044 phase4a_stage1 --port 6007
    """
    from bevctl.observe.launch import tensorboard_command

    command = tensorboard_command(runs or [], port, host, runs_root)
    if dry_run:
        import shlex

        typer.echo(shlex.join(command))
        raise typer.Exit(0)
    from bevctl.console import err

    err().print(f"TensorBoard on http://{host}:{port}/ (Ctrl-C stops it)")
    import os

    os.execv(command[0], command)
