from pathlib import Path
from typing import Optional

import typer


def runs(
    runs_root: Optional[Path] = typer.Option(None, "--runs-root", help="Folder holding run directories (default: $BEVCTL_RUNS or ./runs)."),
    json_out: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
) -> None:
    """List runs: name, phase, status, epoch/iter, last loss, started, where.

    Status is derived honestly: a run whose process or container died without writing run_end shows as
    crashed, with its exit code and last log lines.
    """
    from bevctl import launch
    from bevctl import runs as runs_mod
    from bevctl.console import print_json
    from bevctl.render_launch import render_runs

    infos = [launch.describe_run(d) for d in runs_mod.list_run_dirs(runs_root)]
    if json_out:
        print_json({"schema": 1, "runs": infos})
    else:
        render_runs(infos)
