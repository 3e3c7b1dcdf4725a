"""Mirrors of a run's records into the tools people already watch training with: TensorBoard event files under
``<run>/tb/`` (always, when the `tensorboard` package is installed) and a Weights & Biases run (when `wandb` is
installed and asked for: a ``WANDB_*`` variable set, ``BEVCTL_WANDB=1`` or `open_mirrors(..., wandb=True)`).

The trainer's log sink hands every event dict it writes to events.jsonl to `Mirrors.record`, so the scalars have
the same names as in events.jsonl and `bevctl watch`, at step = ``global_step``. Neither tool is a dependency:
whatever is missing is skipped, and a mirror that fails is switched off with one warning; training never stops
because a dashboard could not be written. Nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

# numbers of a train event that say where a step is, not what it measured
_POSITION = frozenset({"schema", "time", "kind", "epoch", "iter", "iters_per_epoch", "global_step"})
TB_DIR = "tb"


def scalars_of(event: dict[str, Any]) -> dict[str, float]:
    """The numbers of a train/val event under their events.jsonl names (lr, step_time and memory included)."""
    return {k: float(v) for k, v in event.items()
            if k not in _POSITION and not isinstance(v, bool) and isinstance(v, (int, float))}


class Mirrors:
    """The open mirrors of one run; `record`, `image` and `close` go to each of them."""

    def __init__(self, targets: list[Any], warn: Callable[[str], None] | None = None):
        self.targets = targets
        self.warn = warn or (lambda message: None)
        self.step = 0  # the newest global_step seen: validation events carry only their epoch

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def record(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "train" and isinstance(event.get("global_step"), int):
            self.step = event["global_step"]
        if kind not in ("train", "val"):
            return
        scalars = scalars_of(event)
        if scalars:
            self._each("scalars", scalars, self.step, float(event.get("time") or 0) or None)

    def image(self, tag: str, hwc_uint8: Any, step: int | None = None) -> None:
        self._each("image", tag, hwc_uint8, self.step if step is None else step)

    def close(self) -> None:
        self._each("close")
        self.targets = []

    def _each(self, method: str, *args: Any) -> None:
        for target in list(self.targets):
            try:
                getattr(target, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a dashboard must never stop training
                self.targets.remove(target)
                self.warn(f"{target.name} mirror switched off: {type(exc).__name__}: {exc}")
                try:
                    target.close()
                except Exception:  # noqa: BLE001
                    pass


def wandb_wanted(explicit: bool | None = None) -> bool:
    if explicit is not None:
        return explicit
    if os.environ.get("BEVCTL_WANDB", "").lower() in ("1", "true", "yes"):
        return True
    return any(k.startswith("WANDB_") for k in os.environ)


def open_mirrors(run_dir: str | os.PathLike, config: dict[str, Any] | None = None, wandb: bool | None = None,
                 warn: Callable[[str], None] | None = None) -> Mirrors:
    """TensorBoard (when installed) and W&B (when installed and wanted) for the run in `run_dir`; `config` is the
    resolved phase (W&B stores it with the run). An empty `Mirrors` when neither is there."""
    run_dir = Path(run_dir)
    config = config or {}
    targets: list[Any] = []
    say = warn or (lambda message: None)
    try:
        from bevctl.observe.tb import TensorBoardMirror

        targets.append(TensorBoardMirror(run_dir / TB_DIR))
    except ImportError:
        pass  # `tensorboard` is not installed: nothing to mirror into
    except Exception as exc:  # noqa: BLE001 - an unwritable folder must not stop training
        say(f"TensorBoard mirror not started: {type(exc).__name__}: {exc}")
    if wandb_wanted(wandb):
        try:
            from bevctl.observe.wandb_run import WandbMirror

            targets.append(WandbMirror(run_dir, config))
        except ImportError:
            say("W&B asked for (WANDB_* / --wandb) but the wandb package is not installed: pip install wandb")
        except Exception as exc:  # noqa: BLE001
            say(f"W&B mirror not started: {type(exc).__name__}: {exc}")
    return Mirrors(targets, warn)
