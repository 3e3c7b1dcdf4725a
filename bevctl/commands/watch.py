from typing import Annotated, List, Optional

import typer


def watch(
    runs: Annotated[Optional[List[str]], typer.Argument(
        metavar="RUN|PATH", help="Run names, run folders or log files (default: the newest run).")] = None,
    metric: Annotated[List[str], typer.Option(
        "--metric", "-m", metavar="METRIC", help="Metric name, prefix (loss/map/divider) or glob (repeatable).")] = [],  # noqa: B006
    smooth: Annotated[float, typer.Option(
        "--smooth", min=0.0, max=0.999, metavar="WEIGHT", help="EMA weight of the train curves, TensorBoard's semantics.")] = 0.6,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit (1 when a check fails).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the snapshot as JSON (schema 1) and exit.")] = False,
    plot: Annotated[Optional[str], typer.Option(
        "--plot", metavar="OUT.png", help="Write matplotlib curves to a PNG.")] = None,
    phase: Annotated[Optional[str], typer.Option(
        "--phase", metavar="PHASE", help="Check any log against this phase's expected-missing keys and bands.")] = None,
    log_y: Annotated[Optional[bool], typer.Option(
        "--log-y/--linear-y", show_default=False,
        help="Log or linear y axes (default: log when a curve spans more than 20x).")] = None,
    compare: Annotated[List[str], typer.Option(
        "--compare", metavar="RUN", help="Overlay another run on the charts (repeatable).")] = [],  # noqa: B006
    poll: Annotated[bool, typer.Option(
        "--poll", help="Poll files instead of file events (network filesystems).")] = False,
    runs_root: Annotated[Optional[str], typer.Option(
        "--runs-root", metavar="DIR", help="Where run names are looked up (default: $BEVCTL_RUNS or runs/).")] = None,
) -> None:
    """Follow a run's logs: live loss charts, verification and validation panels, alerts.

    Reads our runs (events.jsonl) and, unchanged, logs of the original BEVFusion and of mmdet3d (mmcv
    `<ts>.log` / `<ts>.log.json`, mmengine `<ts>.log` / `vis_data/scalars.json`). Charts put each point at its
    logged iteration; validation metrics are drawn as measured points, never smoothed.

    Examples:

      bevctl watch  # the newest run under runs/, live

      bevctl watch phase4a_stage1_task_gca -m loss/map/divider

      bevctl watch runs/x --once  # one snapshot; exit 1 when a check fails

      bevctl watch work_dirs/bevfusion/20250409_131708 --phase phase4a --json

      bevctl watch runs/x --compare runs/y --once --plot report.png
    """
    from bevctl.watch.cli import main

    raise typer.Exit(main(runs or [], metric, smooth, once, json_out, plot, poll, runs_root, phase, log_y, compare))
