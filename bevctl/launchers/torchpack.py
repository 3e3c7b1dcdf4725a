"""`launch.launcher: torchpack`: the original BEVFusion's launcher, `torchpack dist-run -np N <program>`.

torchpack runs `mpirun --allow-run-as-root -np N -H host:slots ...` (OpenMPI only) and exports MASTER_HOST; the
ranks see OpenMPI's OMPI_COMM_WORLD_* variables, which `model.distributed` maps onto torchrun's names. The
preflight is doctor's launcher checks (torchpack on PATH, OpenMPI's mpirun, a loadable mpi4py), which
`doctor.run_checks(phase, categories=["launcher"])` runs for a torchpack phase.

One node only outside Slurm: across nodes mpirun needs a host list and ssh between them; under
`launch.where: slurm` the batch script passes the allocation's hosts (`slurm.script`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bevctl.errors import UsageError


def executable(in_container: bool = False) -> str:
    """`torchpack` when it is on PATH (or in an image), else the script next to this interpreter when it is there."""
    if in_container or shutil.which("torchpack"):
        return "torchpack"
    beside = Path(sys.executable).parent / "torchpack"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else "torchpack"


def command(phase: Any, program: list[str], nproc: int, hosts: str | None = None,
            in_container: bool = False) -> list[str]:
    """`torchpack dist-run -np <nproc x nodes> [-H hosts] <program>`; `hosts` is `host:slots,...` across nodes."""
    nnodes = phase.launch.nnodes
    if nnodes > 1 and not hosts:
        raise UsageError(f"torchpack across {nnodes} nodes needs the nodes' host list",
                         fix="run it under Slurm (--set launch.where=slurm), which passes the allocation's hosts")
    cmd = [executable(in_container), "dist-run", "-np", str(nproc * nnodes)]
    if hosts:
        cmd += ["-H", hosts]
    return cmd + program

