"""The trainer's command line: `python -m model.train --run-dir DIR` (or the phase's own checkout, see
`bevctl.launchers`), under torchrun for several processes or nodes, or under `torchpack dist-run`. One builder for
every launch path (local, container). Stdlib only."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bevctl.phases import Phase

TRAINER = ["-m", "model.train"]


def trainer_command(phase: "Phase", run_dir: str, nproc: int, python: str | None = None,
                    torchrun: list[str] | None = None) -> list[str]:
    """The trainer under torchrun (several processes or nodes) or as one plain process. `torchrun` is the launcher
    prefix: `python -m torch.distributed.run` of this interpreter by default, `torchrun` inside the image."""
    from bevctl import launchers
    from bevctl.launchers import torchpack

    python = python or sys.executable
    launch = phase.launch
    program = launchers.program(phase, run_dir, python)
    if launch.launcher == "torchpack":
        return torchpack.command(phase, program, nproc, in_container=torchrun is not None)
    if nproc == 1 and launch.nnodes == 1:
        return program
    cmd = [*(torchrun or [python, "-m", "torch.distributed.run"]), f"--nproc-per-node={nproc}", f"--nnodes={launch.nnodes}"]
    if launch.nnodes > 1:
        cmd += [f"--node-rank={launch.node_rank}", "--rdzv-backend=c10d"]
        if launch.rdzv_endpoint:
            cmd.append(f"--rdzv-endpoint={launch.rdzv_endpoint}")
    else:
        cmd += ["--standalone"]
    return cmd + program[1:]  # torchrun takes the module (-m model.train) or script without the interpreter
