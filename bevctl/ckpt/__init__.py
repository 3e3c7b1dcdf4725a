"""Validate a checkpoint against the model's keys before launch, without torch and without running its pickle.

Python API (used by `bevctl check-ckpt`, the launcher's preflight, doctor and the trainer's loader)::

    from bevctl.ckpt import check
    report = check("runs/phase3/epoch_5.pth", phase="phase4a")      # or model_config="full", gca="task", ...
    report.ok, report.exit_code          # True/0 compatible; False/1 incompatible
    report.plan                          # the load plan the trainer applies (bevctl/ckpt/plan.py)
    report.to_json()                     # {"schema": 1, ...}
    report.render()                      # Rich report on stdout (or render(console))

Unreadable, unsafe or non-checkpoint files raise `bevctl.ckpt.CheckpointUnreadable` (a `UsageError`, exit 2).

Layers, lowest first: types; reader (torch zip / pickle), safetensors, trusted (torch.load); files (choose the
reader); checkpoint (unwrap containers); rules, manifest; compare, plan, finite, infer; report; api; command.
The names below load on first use, so `bevctl --help` (which imports `command`) does not pay for the rest.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "check": "bevctl.ckpt.api",
    "Report": "bevctl.ckpt.report",
    "Plan": "bevctl.ckpt.plan",
    "make_plan": "bevctl.ckpt.plan",
    "CheckpointUnreadable": "bevctl.ckpt.types",
    "open_checkpoint": "bevctl.ckpt.checkpoint",
    "load_manifest": "bevctl.ckpt.manifest",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bevctl.ckpt' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
