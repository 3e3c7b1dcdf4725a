"""A Weights & Biases run fed with the same records (wandb's own settings apply: WANDB_MODE=offline writes under
``<run>/wandb/`` and `wandb sync` uploads later; WANDB_PROJECT names the project, default ``bevctl``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import wandb


class WandbMirror:
    name = "W&B"

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "bevctl"),
            name=run_dir.name,
            dir=str(run_dir),
            config=config,
            resume="allow",
            id=os.environ.get("WANDB_RUN_ID") or _run_id(run_dir),
            reinit=True,
        )

    def scalars(self, values: dict[str, float], step: int, wall_time: float | None = None) -> None:
        self._run.log(values, step=step)

    def image(self, tag: str, hwc_uint8: Any, step: int) -> None:
        self._run.log({tag: wandb.Image(hwc_uint8)}, step=step)

    def close(self) -> None:
        self._run.finish()


def _run_id(run_dir: Path) -> str:
    """A stable id per run folder, so a resumed run continues its W&B run instead of starting another."""
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
