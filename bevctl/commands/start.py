import os
import sys
from typing import Annotated, List, Optional

import typer


def start(
    phase: Annotated[str, typer.Argument(metavar="PHASE", help="Shipped phase name (demo, phase3, phase4a, ...) or a phase YAML path.")],
    local: Annotated[Optional[bool], typer.Option("--local/--container", help="Run on this host or in the project container [default: the phase's launch.where; auto = the container when its image exists].")] = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", metavar="N|device=ID,..", help="Processes (GPUs) per node, 0 = CPU; or device=0,1: those GPUs (the container gets them by id).")] = None,
    nnodes: Annotated[Optional[int], typer.Option("--nnodes", min=1, metavar="N", help="Number of nodes (torchrun rendezvous).")] = None,
    node_rank: Annotated[Optional[int], typer.Option("--node-rank", min=0, metavar="RANK", help="This node's rank.")] = None,
    rdzv_endpoint: Annotated[Optional[str], typer.Option("--rdzv-endpoint", metavar="HOST:PORT", help="The rendezvous, the same on every node.")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", metavar="auto|PATH", help="'auto' continues the run (--name, else the phase's newest) from its latest.pth with its recorded config; or a checkpoint or run folder (a checkpoint outside runs/ starts a new run).")] = None,
    set_: Annotated[List[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a phase value, key.path=value (repeatable).")] = [],
    env: Annotated[List[str], typer.Option("--env", metavar="KEY=VALUE", help="Extra environment for the run's container or Slurm job, KEY=VALUE or KEY (this host's value; repeatable).")] = [],
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="Run name [default: the phase's run.name or <phase>-<time>].")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Start without asking for confirmation.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run the preflight and print the plan; start nothing.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Open bevctl watch on the new run.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to end, showing progress; exit with its exit code.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan (and the started run) as JSON.")] = False,
    wandb: Annotated[bool, typer.Option("--wandb", help="Also log the run to Weights & Biases (wandb installed where it trains; WANDB_* settings apply, e.g. WANDB_MODE=offline).")] = False,
) -> None:
    """Preflight, confirm and launch a training phase, detached.

    The preflight checks the phase, the load_from checkpoint against the model's keys (only the phase's expected
    keys may be missing), pretrained files (not needed where load_from covers the module), the data and the
    environment, and refuses to overwrite an existing run. Then it shows a summary and asks [y/N].

    Examples: bevctl start demo --yes --local --wait;  bevctl start phase4a;  bevctl start phase4a --resume auto --name RUN
    """
    from bevctl import launch, preflight
    from bevctl.console import err, print_json
    from bevctl.errors import CheckFailed, UsageError
    from bevctl.render_launch import render_plan

    where = None if local is None else ("local" if local else "container")
    if wandb:  # read by bevctl.observe in the trainer: a local run inherits it, a container or job gets it in its env
        os.environ["BEVCTL_WANDB"] = "1"
        env = [*env, "BEVCTL_WANDB=1"]
    plan = preflight.plan_start(phase, set_, where=where, gpus=gpus, nnodes=nnodes, node_rank=node_rank,
                             rdzv_endpoint=rdzv_endpoint, resume=resume, name=name, env=env)
    if json_out:
        print_json({**plan.to_json(), "started": False})
    else:
        render_plan(plan)
        if plan.batch_script:  # launch.where: slurm: the job script, as sbatch will get it
            sys.stdout.write(plan.batch_script)
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
    where_text = {"container": f"container {str(manifest.get('container_id'))[:12]}",
                  "slurm": f"slurm job {manifest.get('job_id')}"}.get(plan.where, f"pid {manifest.get('pid')}")
    if json_out:
        print_json({"schema": 1, "started": True, "run": plan.name, "run_dir": str(plan.run_dir),
                    "where": plan.where, "pid": manifest.get("pid"), "container_id": manifest.get("container_id"),
                    "job_id": manifest.get("job_id")})
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
