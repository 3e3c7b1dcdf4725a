from pathlib import Path
from typing import Annotated, Optional

import typer


def runs(
    runs_root: Annotated[Optional[Path], typer.Option(
        "--runs-root", metavar="DIR", help="Folder holding run directories (default: $BEVCTL_RUNS or ./runs).")] = None,
    sort: Annotated[str, typer.Option(
        "--sort", metavar="KEY",
        help="started (newest first), name, status, loss (lowest first), map, nds or miou (highest first).")] = "started",
    reverse: Annotated[bool, typer.Option("--reverse", help="Reverse the order.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the runs as JSON (schema 1).")] = False,
) -> None:
    """List runs: name, phase, status, epoch/iter, last loss, last validation mAP / NDS / mIoU, started, where.

    Status is derived honestly: a run whose process or container died without writing run_end shows as
    crashed, with the reason and its last log lines; a run folder with a corrupt run.json is one "unreadable" row.

    Examples:

      bevctl runs

      bevctl runs --sort map  # best validation mAP first

      bevctl runs --json | jq '.runs[] | {name, status, loss, map}'
    """
    from bevctl.watch.runs_table import collect, render, sort_rows

    infos = sort_rows(collect(runs_root), sort, reverse)
    if json_out:
        from bevctl.console import print_json

        print_json({"schema": 1, "runs": infos})
    else:
        render(infos)
