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
