from typing import Optional

import typer


def stop(
    run: str = typer.Argument(..., help="Run name (under runs/) or run directory."),
    grace: Optional[float] = typer.Option(None, "--grace", help="Seconds to wait for the final checkpoint (default: the phase's train.grace_seconds)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Stop a run: SIGTERM, wait for the trainer's final checkpoint, report it.

    The trainer finishes its step, saves latest.pth and exits; continue later with
    `bevctl start PHASE --resume auto`.
    """
    from bevctl import launch
    from bevctl.console import err, print_json
    from bevctl.errors import CheckFailed
    from bevctl.render_launch import resolve_run_dir

    run_dir = resolve_run_dir(run)
    info = launch.stop_run(run_dir, grace)
    if json_out:
        print_json({"schema": 1, **info})
    if info["status"] not in launch.FINAL:
        raise CheckFailed(f"run {info['name']} is still running after the grace period",
                          fix=f"look at {run_dir}/console.out; kill it by hand if it hangs")
    if not json_out:
        ckpt = info.get("last_checkpoint") or "none"
        err().print(f"run [bold]{info['name']}[/] {info['status']} (exit code {info.get('exit_code')}); last checkpoint: {ckpt}")
        if info.get("phase"):
            err().print(f"  continue it:  bevctl start {info['phase']} --resume auto")
