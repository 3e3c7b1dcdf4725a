"""ConvFuser: concatenate camera and LiDAR BEV maps, fuse with one 3x3 Conv-BN-ReLU (`fuser.0`, `fuser.1`)."""

from __future__ import annotations

import torch
from torch import nn


class ConvFuser(nn.Sequential):
    def __init__(self, in_channels=(80, 256), out_channels=256):
        super().__init__(nn.Conv2d(sum(in_channels), out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(True))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return super().forward(torch.cat(inputs, dim=1))
