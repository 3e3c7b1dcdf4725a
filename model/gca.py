"""Task-specific global context attention (GCA) between the shared BEV decoder and each task head.

Squeeze-and-excitation style channel gate: global average pool -> 1x1 conv C -> C/r (no bias) -> ReLU ->
1x1 conv C/r -> C (no bias) -> sigmoid -> rescale the BEV map per channel. With C = 512 and r = 4 that is
512*128 + 128*512 = 131,072 parameters per task, the count in the phase-4a launch note.

Why per task: detection and map segmentation want different channels of the shared 512-ch BEV features (BEVFusion
reports negative transfer when both heads share the decoder output); a cheap gate per head lets each re-weight them.
Modes: `none` (heads read the decoder output), `shared` (one gate, `task_gca.shared`), `task` (one per head,
`task_gca.object`, `task_gca.map`).
"""

from __future__ import annotations

import torch
from torch import nn

class GCA(nn.Module):
    def __init__(self, channels: int = 512, reduction: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.expand = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3), keepdim=True)
        w = torch.sigmoid(self.expand(torch.relu(self.reduce(w))))
        return x * w


def build_task_gca(mode: str, heads, channels: int, reduction: int) -> nn.ModuleDict | None:
    """`mode` as validated by `model.config` (`GcaMode`)."""
    if mode == "none":
        return None
    names = ["shared"] if mode == "shared" else list(heads)
    return nn.ModuleDict({n: GCA(channels, reduction) for n in names})
