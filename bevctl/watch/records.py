"""What every watch layer agrees on about a record: which keys are metrics and how a value becomes a number.

A record is a dict with a ``kind`` (``train``, ``val``, ``gca_enabled``, ``checkpoint_loaded``, ``run_start``,
``run_end``, ``alert`` ... plus ``checkpoint_keys`` and ``log_meta`` for what only text logs carry) and the fields
of that kind, named as in our events (`bevctl.runs`). Values parsed from text stay strings until a chart or a
check needs them: converting all of them would make ingesting a long log several times slower, and most are
never looked at.
"""

from __future__ import annotations

from typing import Any

from bevctl import runs

# Record fields that describe a step rather than measure the model.
BOOKKEEPING = frozenset(runs.TRAIN_FIELDS) | {"schema", "time", "kind", "eta", "mode", "step", "_from"}
# Bookkeeping a user may still chart by asking for it by name (`watch -m lr`).
CHARTABLE_FIELDS = ("lr", "base_lr", "step_time", "data_time", "memory")

# mmengine names its NuScenes metrics differently; alias the headline ones so panels and bands find them.
MMENGINE_ALIASES = {
    "NuScenes metric/pred_instances_3d_NuScenes/mAP": "object/map",
    "NuScenes metric/pred_instances_3d_NuScenes/NDS": "object/nds",
}


def is_metric(key: str) -> bool:
    # learning rates (`lr`, mmengine's `base_lr`, mmcv's per-group `lr_backbone`) are settings, not measurements
    return key not in BOOKKEEPING and not key.endswith("lr") and not key.startswith("lr_")


def number(value: Any) -> float | None:
    """A record value as a float (text logs keep strings), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def add_aliases(record: dict[str, Any]) -> None:
    for long, short in MMENGINE_ALIASES.items():
        if long in record:
            record[short] = record[long]


class Parser:
    """Turns complete lines of one file into records; counts lines it could not read (`garbage`)."""

    name = "base"

    def __init__(self) -> None:
        self.lines = 0
        self.garbage = 0

    def feed(self, lines: list[str]) -> list[dict[str, Any]]:
        raise NotImplementedError
