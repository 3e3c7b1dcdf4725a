"""How `bevctl start` and `bevctl stop` look on a terminal: the launch summary panel, and a run named on the
command line found (`bevctl runs` and `start --wait` render in bevctl.watch, with `bevctl watch`)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from bevctl import runs
from bevctl.console import err, escape
from bevctl.errors import UsageError

GLYPH = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]", "info": "[blue]•[/]"}


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
    if plan.resumed_from:
        grid.add_row("resume", f"{escape(plan.resumed_from)} (outside the runs folder: a new run, the file is only read)")
    elif plan.resuming:
        grid.add_row("resume", f"{escape(str(phase.resume))} (latest.pth of {plan.run_dir}, its recorded config)")
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
    procs = f"{plan.nproc} CPU process(es)/node" if phase.launch.gpus == 0 else f"{plan.nproc} GPU(s)/node"
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


def resolve_run_dir(run: str, root: Path | None = None) -> Path:
    """The run directory a user named: a folder holding run.json/events.jsonl, or a run name under runs/."""
    known = lambda: ", ".join(d.name for d in runs.list_run_dirs(root)[:5]) or "none"  # noqa: E731
    try:
        path = Path(run)
        if (path / runs.MANIFEST).is_file() or (path / runs.EVENTS).is_file():
            return path
        # a bare name only: `runs/` joined with an absolute or dotted path would leave the runs folder
        if run and "/" not in run and run not in (".", ".."):
            candidate = runs.runs_root(root or "runs") / run
            if (candidate / runs.MANIFEST).is_file() or (candidate / runs.EVENTS).is_file():
                return candidate
    except OSError as exc:  # a name longer than the file system allows, a folder we may not read
        raise UsageError(f"cannot use {run[:80]!r} as a run: {exc.strerror or exc}",
                         fix=f"name a run from bevctl runs; recent: {known()}") from None
    what = " (that folder holds no run.json)" if Path(run).is_dir() else ""
    raise UsageError(f"no run named {run[:80]!r}{what}", fix=f"name a run from bevctl runs (recent: {known()}) or its run directory")
