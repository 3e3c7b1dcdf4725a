"""Alerts from the records: non-finite losses, a streak of non-finite gradient norms, loss spikes, a stalled run,
a run that ended badly. Scanning is incremental: each snapshot looks only at the points added since the last."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bevctl.watch.series import Series

# fp16 dynamic loss scaling skips steps with inf/nan gradients now and then; only a streak means trouble.
GRAD_NORM_STREAK = 5
SPIKE_Z = 4.0
SPIKE_WARMUP = 10
SPIKE_ALPHA = 0.05
STALL_FACTOR = 5.0
STALL_FLOOR_S = 30.0


class AlertScanner:
    def __init__(self) -> None:
        self._loss_seen = 0
        self._grad_seen = 0
        self.nonfinite_loss = 0
        self.first_nonfinite: dict[str, Any] | None = None
        self.grad_streak = 0
        self.grad_streak_max = 0
        self.spikes = 0
        self.last_spike: dict[str, Any] | None = None
        self._mean: float | None = None
        self._var = 0.0
        self._spike_n = 0

    def scan_loss(self, loss: Series) -> None:
        values = loss.values
        for i in range(self._loss_seen, len(values)):
            value = values[i]
            if not math.isfinite(value):
                self.nonfinite_loss += 1
                if self.first_nonfinite is None:
                    self.first_nonfinite = {"index": i, "epoch": loss.epochs[i], "value": value}
                continue
            if self._mean is None:  # seed with the first value, not 0 (cold-start false alarms)
                self._mean, self._var = value, 0.0
                self._spike_n = 1
                continue
            std = math.sqrt(self._var)
            if self._spike_n >= SPIKE_WARMUP and std > 0 and (value - self._mean) / std > SPIKE_Z:
                self.spikes += 1
                self.last_spike = {"index": i, "epoch": loss.epochs[i], "value": value,
                                   "z": (value - self._mean) / std, "mean": self._mean}
            delta = value - self._mean
            self._mean += SPIKE_ALPHA * delta
            self._var = (1 - SPIKE_ALPHA) * (self._var + SPIKE_ALPHA * delta * delta)
            self._spike_n += 1
        self._loss_seen = len(values)

    def scan_grad_norm(self, grad: Series) -> None:
        values = grad.values
        for i in range(self._grad_seen, len(values)):
            if math.isfinite(values[i]):
                self.grad_streak = 0
            else:
                self.grad_streak += 1
                self.grad_streak_max = max(self.grad_streak_max, self.grad_streak)
        self._grad_seen = len(values)

    def alerts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.nonfinite_loss:
            where = self.first_nonfinite or {}
            out.append(alert("error", "nonfinite_loss", f"loss is non-finite in {self.nonfinite_loss} logged step(s), "
                                                        f"first in epoch {where.get('epoch')}"))
        if self.grad_streak >= GRAD_NORM_STREAK or self.grad_streak_max >= GRAD_NORM_STREAK:
            out.append(alert("error" if self.grad_streak >= GRAD_NORM_STREAK else "warning", "nonfinite_grad_norm",
                             f"grad_norm non-finite {self.grad_streak_max} logged steps in a row "
                             f"(now {self.grad_streak}); occasional ones are normal under fp16"))
        if self.last_spike is not None:
            s = self.last_spike
            out.append(alert("warning", "loss_spike", f"{self.spikes} loss spike(s); last {s['value']:.4g} in epoch "
                                                      f"{s['epoch']} (z={s['z']:.1f} against running mean "
                                                      f"{s['mean']:.4g})"))
        return out


def alert(level: str, kind: str, message: str) -> dict[str, Any]:
    return {"level": level, "kind": kind, "message": message}


def median_interval(times: list[Any], arrivals: list[float]) -> float | None:
    """The typical seconds between logged steps: from the logged times, else from when lines arrived."""
    stamps = [t for t in times if isinstance(t, (int, float))]
    gaps = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
    if len(gaps) < 3:
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:]) if b > a]
    return statistics.median(gaps) if len(gaps) >= 3 else None


def stall_alert(interval: float | None, quiet: float) -> dict[str, Any] | None:
    if interval is not None and quiet > max(STALL_FACTOR * interval, STALL_FLOOR_S):
        return alert("warning", "stalled", f"no new line for {duration(quiet)} ({quiet / interval:.0f}x the median "
                                           f"interval of {duration(interval)})")
    return None


def end_alert(run_end: dict[str, Any] | None, status: str) -> dict[str, Any] | None:
    """Why a run that did not finish ended (its run_end message), so the reason is on screen, not only a state."""
    if status not in ("failed", "stopped"):
        return None
    message = str((run_end or {}).get("message") or "no reason logged")
    code = (run_end or {}).get("exit_code")
    suffix = f" (exit code {code})" if code not in (None, 0) else ""
    return alert("error" if status == "failed" else "warning", f"run_{status}", message + suffix)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"
