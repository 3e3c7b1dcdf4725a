from typing import Annotated, Optional

import typer


def stop(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run name (under runs/) or run directory.")],
    grace: Annotated[Optional[float], typer.Option("--grace", metavar="SECONDS", help="Seconds to wait for the final checkpoint [default: the phase's train.grace_seconds + 10].")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Stop a run: SIGTERM, wait for the trainer's final checkpoint, report it.

    The trainer finishes its step, saves latest.pth and exits; continue exactly this run later (with its own
    recorded config) with `bevctl start PHASE --resume auto --name RUN`. The recorded pid is signalled only when it
    is still the run's supervisor (same start time and command line); a stale pid is reported, not signalled.
    """
    from bevctl import runs
    from bevctl.console import err, print_json
    from bevctl.errors import CheckFailed
    from bevctl.render_launch import resolve_run_dir
    from bevctl.stop import resume_hint, stop_run

    run_dir = resolve_run_dir(run)
    info = stop_run(run_dir, grace)
    if json_out:
        print_json({"schema": 1, **info})
    if info["status"] not in runs.FINAL_STATUSES:
        raise CheckFailed(f"run {info['name']} is still running after the grace period",
                          fix=f"look at {run_dir}/console.out; kill it by hand if it hangs")
    if not json_out:
        ckpt = info.get("last_checkpoint") or "none"
        err().print(f"run [bold]{info['name']}[/] {info['status']} (exit code {info.get('exit_code')}); last checkpoint: {ckpt}")
        if info.get("phase"):
            err().print(f"  continue it:  {resume_hint(info)}")
