"""How start / stop / runs look on a terminal: the launch summary, the runs table, waiting with progress."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from bevctl import runs
from bevctl.console import err, escape, out
from bevctl.errors import UsageError

GLYPH = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]", "info": "[blue]•[/]"}
STATUS_STYLE = {"running": "green", "finished": "bold green", "stopped": "yellow", "failed": "red",
                "crashed": "bold red", "created": "dim", runs.UNREADABLE: "bold red"}


def render_plan(plan: Any) -> None:
    from rich.panel import Panel
    from rich.table import Table

    phase = plan.phase
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("phase", f"{phase.name}  [dim]{escape(phase.description)}[/]")
    gca = {"none": "no GCA", "shared": "shared GCA", "task": "task-specific GCA (task_gca.object + task_gca.map)"}
    grid.add_row("model", f"{phase.model.config}, heads {'+'.join(phase.model.heads)}, {gca[phase.model.gca]}")
    if plan.resuming:
        grid.add_row("resume", f"{phase.resume} (latest.pth of {plan.run_dir})")
    elif phase.load_from:
        kept = f", {plan.kept_params:,} parameters keep their training" if plan.kept_params else ""
        grid.add_row("load_from", f"{escape(phase.load_from)}{kept}")
    else:
        grid.add_row("weights", "random initialisation" + (f" + pretrained {', '.join(phase.pretrained)}" if phase.pretrained else ""))
    if plan.new_params:
        new = ", ".join(f"{k} {v:,}" for k, v in plan.new_params.items())
        grid.add_row("new", f"{new}  [dim](total {sum(plan.new_params.values()):,} from scratch)[/]")
    grid.add_row("training", f"{phase.train.epochs} epochs, batch {phase.train.batch_size}/process, {phase.train.precision}, "
                             f"lr {phase.optim.lr:g} ({phase.optim.schedule})")
    procs = "CPU" if phase.launch.gpus == 0 else f"{plan.nproc} GPU(s)/node"
    grid.add_row("processes", f"{procs} × {phase.launch.nnodes} node(s), {phase.launch.launcher}")
    synth = " (synthetic)" if phase.data.synthetic else ""
    grid.add_row("data", f"{escape(phase.data.root)} {phase.data.version}{synth}")
    grid.add_row("where", plan.where + (f" (image {phase.container.image}, container {phase.container.name})" if plan.where == "container" else ""))
    grid.add_row("run dir", str(plan.run_dir))
    grid.add_row("command", escape(shlex.join(plan.command)))
    for finding in plan.findings:
        detail = escape(finding.detail) + (f"  [dim]fix: {escape(finding.fix)}[/]" if finding.fix and finding.status in ("fail", "warn") else "")
        grid.add_row(GLYPH.get(finding.status, "?") + " " + escape(finding.label), detail)
    err().print(Panel(grid, title="bevctl start", border_style="cyan", expand=False))


def render_runs(infos: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not infos:
        err().print("no runs yet: start one with [bold]bevctl start demo --yes[/]")
        return
    table = Table(title=None, header_style="bold")
    for column in ("run", "phase", "status", "epoch", "iter", "loss", "started", "where"):
        table.add_column(column, justify="right" if column in ("epoch", "iter", "loss") else "left")
    for info in infos:
        status = info["status"]
        if info.get("exit_code") not in (None, 0):
            status += f" ({info['exit_code']})"
        epoch = f"{info['epoch']}/{info['epochs']}" if info.get("epoch") is not None else "-"
        it = f"{info['iter']}/{info['iters_per_epoch']}" if info.get("iter") is not None else "-"
        loss = f"{info['loss']:.4f}" if isinstance(info.get("loss"), (int, float)) else "-"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["started_at"])) if info.get("started_at") else "-"
        where = info.get("where") or "-"
        if info.get("container_id"):
            where += f" {str(info['container_id'])[:12]}"
        elif info.get("pid"):
            where += f" pid {info['pid']}"
        style = STATUS_STYLE.get(info["status"], "")
        table.add_row(escape(info["name"]), escape(info.get("phase") or "-"), f"[{style}]{status}[/]" if style else status,
                      epoch, it, loss, started, where)
    out().print(table)
    for info in infos:
        if info["status"] in (runs.UNREADABLE, "failed") and info.get("reason"):
            err().print(f"[red]{escape(info['name'])} {info['status']}[/]: {escape(info['reason'])}", soft_wrap=True)
        if info["status"] == "crashed" and info.get("last_log_lines"):
            err().print(f"[bold red]{info['name']} crashed[/]; last log lines:")
            for line in info["last_log_lines"]:
                err().print("  " + escape(line), soft_wrap=True)


def resolve_run_dir(run: str, root: Path | None = None) -> Path:
    path = Path(run)
    if (path / runs.MANIFEST).exists() or (path / runs.EVENTS).exists():
        return path
    candidate = runs.runs_root(root or "runs") / run
    if candidate.is_dir():
        return candidate
    known = [d.name for d in runs.list_run_dirs(root)][:5]
    raise UsageError(f"no run named {run!r}", fix=f"see bevctl runs; recent: {', '.join(known) or 'none'}")


def wait_for_run(run_dir: Path, poll: float = 1.0) -> int:
    """Block until the run ends, with a progress bar on a terminal; returns its exit code."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = err()
    last_line = None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} it"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("starting", total=None)
        while True:
            info = runs.describe_run(run_dir)
            if info.get("iter") is not None and info.get("iters_per_epoch"):
                total = info["iters_per_epoch"] * (info.get("epochs") or 1)
                done = (info["epoch"] - 1) * info["iters_per_epoch"] + info["iter"]
                loss = f"loss {info['loss']:.4f}" if isinstance(info.get("loss"), (int, float)) else ""
                progress.update(task, total=total, completed=done, description=f"epoch {info['epoch']}/{info['epochs']} {loss}")
                line = f"epoch {info['epoch']}/{info['epochs']} iter {info['iter']}/{info['iters_per_epoch']} {loss}"
                if not console.is_terminal and line != last_line:
                    console.print(line)
                    last_line = line
            if info["status"] in runs.FINAL_STATUSES:
                break
            time.sleep(poll)
    code = info.get("exit_code") or 0
    style = "green" if info["status"] == "finished" else "red"
    console.print(f"run [bold]{info['name']}[/] [{style}]{info['status']}[/] (exit code {code})")
    if info["status"] == "failed" and info.get("reason"):
        console.print("  " + escape(info["reason"]), soft_wrap=True)
    if info["status"] == "crashed":
        for line in info.get("last_log_lines", []):
            console.print("  " + escape(line), soft_wrap=True)
    if info["status"] in ("finished", "stopped"):
        return 0
    return int(code) or 1
