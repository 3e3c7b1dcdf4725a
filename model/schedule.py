"""Learning-rate and momentum schedules as pure functions of the step, plus a tiny stateful wrapper.

The formulas are mmcv 1.x's hooks that BEVFusion's configs use (`mmcv/runner/hooks/{lr,momentum}_updater.py`):
- `cosine`: `CosineAnnealing` to `min_lr_ratio * lr`; per iteration the factor is `iter / max_iters`, per epoch
  (`by_epoch`, the original fusion config) it is `epoch / max_epochs`, so the lr changes once per epoch.
- `cyclic`: `CyclicLrUpdaterHook` defaults, one cycle: the first `int(0.4 * max_iters)` iterations rise (cosine)
  from `lr` to `10 * lr`, the rest fall towards `1e-4 * lr`.
- `constant`: `lr`.
- Warm-up (`warmup_iters`, linear): multiplies the regular lr by `1 - (1 - i / warmup_iters) * (1 - warmup_ratio)`.
- Momentum `cyclic` (`CyclicMomentumUpdaterHook` defaults, AdamW's beta1): from `beta1` down to
  `beta1 * 0.85 / 0.95` over the first 40 % of the iterations, back up to `beta1` over the rest
  (0.9 -> 0.805 -> 0.9).

The wrapper's state is the step alone, so resuming restores the exact lr and momentum without replaying anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

CYCLIC_LR_RATIOS = (10.0, 1e-4)
CYCLIC_MOMENTUM_RATIOS = (0.85 / 0.95, 1.0)
CYCLIC_STEP_RATIO_UP = 0.4


@dataclass(frozen=True)
class ScheduleSpec:
    """What `phase.optim` says about lr and momentum; plain data so tests can build one without a phase."""

    lr: float
    total_iters: int
    schedule: Literal["cosine", "cyclic", "constant"] = "cosine"
    warmup_iters: int = 0
    warmup_ratio: float = 1.0 / 3
    min_lr_ratio: float = 1e-3
    by_epoch: bool = False
    iters_per_epoch: int = 1
    momentum: Literal["constant", "cyclic"] = "constant"
    beta1: float = 0.9

    @classmethod
    def from_optim(cls, optim, total_iters: int, iters_per_epoch: int = 1, lr: float | None = None) -> "ScheduleSpec":
        return cls(
            lr=optim.lr if lr is None else lr,
            total_iters=max(1, total_iters),
            schedule=optim.schedule,
            warmup_iters=optim.warmup_iters,
            warmup_ratio=optim.warmup_ratio,
            min_lr_ratio=optim.min_lr_ratio,
            by_epoch=getattr(optim, "by_epoch", False),
            iters_per_epoch=max(1, iters_per_epoch),
            momentum=getattr(optim, "momentum", "constant"),
        )


def annealing_cos(start: float, end: float, factor: float) -> float:
    """mmcv's `annealing_cos`: `start` at factor 0, `end` at factor 1."""
    return end + (start - end) * (1 + math.cos(math.pi * factor)) / 2


def _cycle(step: int, total: int, ratios: tuple[float, float]) -> float:
    """The ratio to the base value at `step` of one mmcv cycle (up phase, then down phase)."""
    up = int(CYCLIC_STEP_RATIO_UP * total)
    step = step % total
    if step < up:
        return annealing_cos(1.0, ratios[0], step / up)
    return annealing_cos(ratios[0], ratios[1], (step - up) / (total - up))


def lr_at(step: int, spec: ScheduleSpec) -> float:
    """The lr for the optimizer step with 0-based index `step`."""
    if spec.schedule == "cosine":
        if spec.by_epoch:
            epochs = max(spec.total_iters // spec.iters_per_epoch, 1)
            factor = (step // spec.iters_per_epoch) / epochs
        else:
            factor = step / spec.total_iters
        lr = annealing_cos(spec.lr, spec.lr * spec.min_lr_ratio, min(factor, 1.0))
    elif spec.schedule == "cyclic":
        lr = spec.lr * _cycle(step, spec.total_iters, CYCLIC_LR_RATIOS)
    elif spec.schedule == "constant":
        lr = spec.lr
    else:
        raise ValueError(f"unknown schedule {spec.schedule!r}")
    if step < spec.warmup_iters:
        k = (1 - step / spec.warmup_iters) * (1 - spec.warmup_ratio)
        lr *= 1 - k
    return lr


def beta1_at(step: int, spec: ScheduleSpec) -> float:
    """AdamW's beta1 (the momentum mmcv schedules) for the optimizer step with 0-based index `step`."""
    if spec.momentum == "cyclic":
        return spec.beta1 * _cycle(step, spec.total_iters, CYCLIC_MOMENTUM_RATIOS)
    return spec.beta1


class LRSchedule:
    """Sets every param group's lr (and beta1) before each optimizer step; `state_dict` is just the step count."""

    def __init__(self, optimizer, spec: ScheduleSpec):
        self.optimizer = optimizer
        self.spec = spec
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        lr = lr_at(self.step_count, self.spec)
        beta1 = beta1_at(self.step_count, self.spec)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
            if self.spec.momentum != "constant" and "betas" in group:
                group["betas"] = (beta1, group["betas"][1])

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
