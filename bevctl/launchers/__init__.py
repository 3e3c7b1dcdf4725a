"""How a run's processes start, beyond torchrun on one host: torchpack (OpenMPI), Slurm jobs, an existing BEVFusion
checkout as the trainer, and the environment a container gets.

`program(phase, run_dir, python)` is one trainer process's argv: the bundled `python -m model.train --run-dir D`,
or the checkout's `python tools/train.py configs/x.yaml --run-dir D ...` (`checkout`). Launchers wrap it:
`torchpack.command` (`torchpack dist-run -np N <program>`), torchrun (in `bevctl.launch`), `slurm.script` (an
sbatch script whose `srun` runs one of those per node). Stdlib only, like the rest of the CLI side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUNDLED = ["-m", "model.train"]


def program(phase: Any, run_dir: str, python: str) -> list[str]:
    """One trainer process: the bundled trainer, or the phase's checkout (`trainer:`)."""
    if getattr(phase, "trainer", None) is not None:
        from bevctl.launchers import checkout

        return checkout.program(phase, run_dir)
    return [python, *BUNDLED, "--run-dir", run_dir]


def workdir(phase: Any) -> Path | None:
    """Where the trainer must start: the checkout (its scripts import from it), else wherever bevctl runs."""
    trainer = getattr(phase, "trainer", None)
    return Path(trainer.repo).expanduser().resolve() if trainer is not None else None


def findings(phase: Any, where: str) -> list[tuple[str, str, str, str]]:
    """Preflight of the launcher, the trainer and the cluster: (status, label, detail, fix) rows, like doctor's."""
    import shutil

    rows: list[tuple[str, str, str, str]] = []
    if getattr(phase, "trainer", None) is not None:
        from bevctl.launchers import checkout

        problems = checkout.problems(phase)
        rows += [("fail", label, detail, fix) for label, detail, fix in problems]
        if not problems:
            trainer = phase.trainer
            rows.append(("ok", "trainer", f"{trainer.script} {trainer.config} in {workdir(phase)}", ""))
    if phase.launch.launcher == "torchpack" and phase.launch.nnodes > 1 and where != "slurm":
        rows.append(("fail", "launcher", f"torchpack across {phase.launch.nnodes} nodes needs the nodes' host list",
                     "run it under Slurm (--set launch.where=slurm), which passes the allocation's hosts"))
    if where == "slurm":
        missing = [tool for tool in ("sbatch", "squeue", "scancel", "scontrol") if shutil.which(tool) is None]
        if missing:
            rows.append(("fail", "slurm", f"{', '.join(missing)}: command not found",
                         "run bevctl on a Slurm login node, or choose --set launch.where=local"))
        else:
            spec = phase.launch.slurm
            what = ", ".join(f"{k} {v}" for k, v in (("partition", spec.partition), ("account", spec.account),
                                                      ("time", spec.time)) if v) or "the cluster's defaults"
            rows.append(("ok", "slurm", f"{phase.launch.nnodes} node(s) x 1 task, {what}", ""))
    return rows
