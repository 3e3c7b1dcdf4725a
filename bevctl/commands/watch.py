from typing import List, Optional

import typer


def watch(
    runs: Optional[List[str]] = typer.Argument(
        None, metavar="RUN|PATH", help="Run names, run folders or log files (default: the newest run)."
    ),
    metric: List[str] = typer.Option(
        [], "--metric", "-m", help="Metric name, prefix (loss/map/divider) or glob (repeatable)."
    ),
    smooth: float = typer.Option(0.6, "--smooth", min=0.0, max=0.999, help="EMA weight, TensorBoard's semantics."),
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit (1 when a check fails)."),
    json_out: bool = typer.Option(False, "--json", help="Print the snapshot as JSON (schema 1) and exit."),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="OUT.png", help="Write matplotlib curves to a PNG."),
    poll: bool = typer.Option(False, "--poll", help="Poll files instead of file events (network filesystems)."),
    runs_root: Optional[str] = typer.Option(
        None, "--runs-root", metavar="DIR", help="Where run names are looked up (default: $BEVCTL_RUNS or runs/)."
    ),
) -> None:
    """Follow a run's logs: live loss charts, verification and validation panels, alerts.

    Reads our runs (events.jsonl) and, unchanged, logs of the original BEVFusion and of mmdet3d (mmcv
    `<ts>.log` / `<ts>.log.json`, mmengine `<ts>.log` / `vis_data/scalars.json`).

    Examples:

      bevctl watch                                  # the newest run under runs/, live

      bevctl watch phase4a_stage1_task_gca -m loss/map/divider

      bevctl watch runs/x --once                    # one snapshot; exit 1 when a check fails

      bevctl watch work_dirs/bevfusion/20250409_131708 --json

      bevctl watch runs/x --once --plot report.png
    """
    from bevctl.watch.cli import main

    raise typer.Exit(main(runs or [], metric, smooth, once, json_out, plot, poll, runs_root))
