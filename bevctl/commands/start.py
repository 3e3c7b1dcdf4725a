import sys
from typing import List, Optional

import typer


def start(
    phase: str = typer.Argument(..., help="Shipped phase name (demo, phase3, phase4a, ...) or a phase YAML path."),
    local: Optional[bool] = typer.Option(None, "--local/--container", help="Run on this host or in the project container (default: the phase's launch.where; auto = container when its image exists)."),
    gpus: Optional[int] = typer.Option(None, "--gpus", min=0, help="Processes (GPUs) per node; 0 = CPU."),
    nnodes: Optional[int] = typer.Option(None, "--nnodes", min=1, help="Number of nodes (torchrun rendezvous)."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", min=0, help="This node's rank."),
    rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", help="HOST:PORT of the rendezvous, the same on every node."),
    resume: Optional[str] = typer.Option(None, "--resume", help="'auto' continues the phase's run from latest.pth; or a checkpoint path."),
    set_: List[str] = typer.Option([], "--set", help="Override a phase value: key.path=value (repeatable)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the phase's run.name or <phase>-<time>)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Start without asking for confirmation."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run the preflight and print the plan; start nothing."),
    follow: bool = typer.Option(False, "--follow", help="Open bevctl watch on the new run."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the run to end, showing progress; exit with its exit code."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan (and the started run) as JSON."),
) -> None:
    """Preflight, confirm and launch a training phase, detached.

    The preflight checks the phase, the load_from checkpoint against the model's keys (only the phase's expected
    keys may be missing), pretrained files (not needed where load_from covers the module), the data and the
    environment, and refuses to overwrite an existing run. Then it shows a summary and asks [y/N].

    Examples: bevctl start demo --yes --local --wait;  bevctl start phase4a;  bevctl start phase4a --resume auto
    """
    from bevctl import launch, preflight
    from bevctl.console import err, print_json
    from bevctl.errors import CheckFailed, UsageError
    from bevctl.render_launch import render_plan

    where = None if local is None else ("local" if local else "container")
    plan = preflight.plan_start(phase, set_, where=where, gpus=gpus, nnodes=nnodes, node_rank=node_rank,
                             rdzv_endpoint=rdzv_endpoint, resume=resume, name=name)
    if json_out:
        print_json({**plan.to_json(), "started": False})
    else:
        render_plan(plan)
    failures = plan.failures()
    if failures:
        first = failures[0]
        more = f" (+{len(failures) - 1} more above)" if len(failures) > 1 else ""
        raise CheckFailed(f"preflight failed: {first.label}: {first.detail}{more}", fix=first.fix or None)
    if dry_run:
        err().print("[dim]dry run: nothing started[/]")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to confirm on", fix="pass --yes to start without confirmation")
        if not typer.confirm("Start training?", default=False):
            raise typer.Exit(1)
    manifest = launch.launch(plan, sys.argv)
    where_text = f"container {str(manifest.get('container_id'))[:12]}" if plan.where == "container" else f"pid {manifest.get('pid')}"
    if json_out:
        print_json({"schema": 1, "started": True, "run": plan.name, "run_dir": str(plan.run_dir),
                    "where": plan.where, "pid": manifest.get("pid"), "container_id": manifest.get("container_id")})
    err().print(f"[green]started[/] run [bold]{plan.name}[/] ({where_text}) in {plan.run_dir}")
    err().print(f"  watch it:  bevctl watch {plan.name}\n  stop it:   bevctl stop {plan.name}")
    if follow:
        from bevctl.commands.watch import watch as watch_command

        watch_command(runs=[str(plan.run_dir)])
    elif wait:
        from bevctl.watch.wait import wait_for_run  # the progress bar, ETA and last loss `bevctl watch` shows

        code = wait_for_run(plan.run_dir)
        if code:
            raise typer.Exit(code)
