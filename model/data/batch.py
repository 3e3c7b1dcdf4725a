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
