"""Batching per the contract in DEVELOPERS.md: fixed-size tensors are stacked, ragged ones stay lists."""

from __future__ import annotations

import torch

LISTS = ("points", "gt_boxes", "gt_labels", "metas")


def collate(items: list[dict]) -> dict:
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = values if key in LISTS else torch.stack(values, 0)
    return batch


def to_device(batch, device: torch.device):
    """Tensors (also inside lists and dicts) moved to `device`; `metas` stay as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: (v if k == "metas" else to_device(v, device)) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
