"""Learning-rate schedules, per iteration, as a pure function of the step plus a tiny stateful wrapper.

The shapes follow mmcv's hooks that BEVFusion's configs use:
- `cosine`: linear warm-up from `warmup_ratio * lr` to `lr` over `warmup_iters`, then cosine annealing to
  `min_lr_ratio * lr` at the last iteration (`CosineAnnealing` with `warmup: linear`).
- `cyclic`: one cycle, 40 % of the iterations rising (cosine) from `lr` to `10 * lr`, the rest falling to
  `1e-4 * lr` (`cyclic` policy, `target_ratio: [10, 1e-4]`, `cyclic_times: 1`, `step_ratio_up: 0.4`).
  Warm-up, when set, multiplies the first iterations as for cosine.
- `constant`: `lr` after the warm-up.

The wrapper's state is the step alone, so resuming restores the exact lr without replaying anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CYCLIC_UP_RATIO = 10.0
CYCLIC_DOWN_RATIO = 1e-4
CYCLIC_STEP_RATIO_UP = 0.4


@dataclass(frozen=True)
class ScheduleSpec:
    """What `phase.optim` says about the lr; plain data so tests can build one without a phase."""

    lr: float
    total_iters: int
    schedule: str = "cosine"  # cosine | cyclic | constant
    warmup_iters: int = 0
    warmup_ratio: float = 1.0 / 3
    min_lr_ratio: float = 1e-3

    @classmethod
    def from_optim(cls, optim, total_iters: int) -> "ScheduleSpec":
        return cls(
            lr=optim.lr,
            total_iters=max(1, total_iters),
            schedule=optim.schedule,
            warmup_iters=optim.warmup_iters,
            warmup_ratio=optim.warmup_ratio,
            min_lr_ratio=optim.min_lr_ratio,
        )


def _cos_between(start: float, end: float, fraction: float) -> float:
    fraction = min(max(fraction, 0.0), 1.0)
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def lr_at(step: int, spec: ScheduleSpec) -> float:
    """The lr for the optimizer step with 0-based index `step`."""
    last = max(spec.total_iters - 1, 1)
    if spec.schedule == "cosine":
        lr = _cos_between(spec.lr, spec.lr * spec.min_lr_ratio, step / last)
    elif spec.schedule == "cyclic":
        up = max(int(round(spec.total_iters * CYCLIC_STEP_RATIO_UP)), 1)
        if step < up:
            lr = _cos_between(spec.lr, spec.lr * CYCLIC_UP_RATIO, step / up)
        else:
            lr = _cos_between(spec.lr * CYCLIC_UP_RATIO, spec.lr * CYCLIC_DOWN_RATIO, (step - up) / max(last - up, 1))
    elif spec.schedule == "constant":
        lr = spec.lr
    else:
        raise ValueError(f"unknown schedule {spec.schedule!r}")
    if step < spec.warmup_iters:
        # mmcv's linear warm-up scales the regular lr: ratio at step 0, 1 at the end of the warm-up.
        k = (1 - step / spec.warmup_iters) * (1 - spec.warmup_ratio)
        lr *= 1 - k
    return lr


class LRSchedule:
    """Sets every param group's lr before each optimizer step; `state_dict` is just the step count."""

    def __init__(self, optimizer, spec: ScheduleSpec):
        self.optimizer = optimizer
        self.spec = spec
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        lr = lr_at(self.step_count, self.spec)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step": self.step_count, "schedule": self.spec.schedule, "total_iters": self.spec.total_iters}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self._apply()
