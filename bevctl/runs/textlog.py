"""The human log in mmcv's style (`<timestamp> - bevctl - LEVEL - message`), so `grep loss/map/divider` and the
tools that parse mmcv logs keep working. Stdlib only."""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from pathlib import Path
from typing import Any

from bevctl.runs.layout import LOGGER_NAME



def log_timestamp(t: float | None = None) -> str:
    """mmcv's logging timestamp: `2026-11-25 09:10:44,756`."""
    moment = _dt.datetime.fromtimestamp(time.time() if t is None else t)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f",{moment.microsecond // 1000:03d}"


def log_file_name(t: float | None = None) -> str:
    return _dt.datetime.fromtimestamp(time.time() if t is None else t).strftime("%Y%m%d_%H%M%S") + ".log"


def format_eta(seconds: float) -> str:
    """`1 day, 2:03:04` like mmcv (str of a timedelta in whole seconds)."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0
    return str(_dt.timedelta(seconds=int(seconds)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_train_line(
    epoch: int,
    it: int,
    iters_per_epoch: int,
    lr: float,
    eta_seconds: float,
    step_time: float,
    data_time: float,
    memory: int,
    metrics: dict[str, float],
) -> str:
    """mmcv TextLoggerHook's line: model log vars, then `loss`, then `grad_norm`."""
    head = (
        f"Epoch [{epoch}][{it}/{iters_per_epoch}]\tlr: {lr:.3e}, eta: {format_eta(eta_seconds)}, "
        f"time: {step_time:.3f}, data_time: {data_time:.3f}, memory: {int(memory)}"
    )
    ordered = [k for k in metrics if k not in ("loss", "grad_norm")]
    ordered += [k for k in ("loss", "grad_norm") if k in metrics]
    items = ", ".join(f"{k}: {_fmt(metrics[k])}" for k in ordered)
    return f"{head}, {items}" if items else head


def format_val_line(epoch: int, iters: int, metrics: dict[str, float]) -> str:
    items = ", ".join(f"{k}: {_fmt(v)}" for k, v in metrics.items())
    return f"Epoch(val) [{epoch}][{iters}]\t{items}"


class TextLog:
    """The human log: `<timestamp> - bevctl - LEVEL - message`, flushed per line."""

    def __init__(self, path: str | os.PathLike, echo: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)
        self.echo = echo

    def write(self, message: str, level: str = "INFO") -> None:
        for line in message.splitlines() or [""]:
            text = f"{log_timestamp()} - {LOGGER_NAME} - {level} - {line}"
            self._file.write(text + "\n")
            if self.echo:
                print(text, flush=True)
        self._file.flush()

    def info(self, message: str) -> None:
        self.write(message, "INFO")

    def warning(self, message: str) -> None:
        self.write(message, "WARNING")

    def error(self, message: str) -> None:
        self.write(message, "ERROR")

    def close(self) -> None:
        self._file.close()
