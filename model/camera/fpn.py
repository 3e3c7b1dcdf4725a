"""GeneralizedLSSFPN: top-down fusion of Swin stages 1-3 into one stride-8 map (only level 0 feeds the view transform).

Unlike a classic FPN, each level *concatenates* its input with the upsampled coarser level and reduces with a 1x1
Conv-BN-ReLU (`lateral_convs.i`), then refines with a 3x3 Conv-BN-ReLU (`fpn_convs.i`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Module):
    """mmcv ConvModule layout (`conv`, `bn`) so keys read `lateral_convs.0.conv.weight`."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class GeneralizedLSSFPN(nn.Module):
    def __init__(self, in_channels=(192, 384, 768), out_channels=256):
        super().__init__()
        n = len(in_channels) - 1
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(n):
            coarser = in_channels[i + 1] if i == n - 1 else out_channels
            self.lateral_convs.append(ConvBNReLU(in_channels[i] + coarser, out_channels, 1))
            self.fpn_convs.append(ConvBNReLU(out_channels, out_channels, 3))

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = list(inputs)
        for i in range(len(laterals) - 2, -1, -1):
            up = F.interpolate(laterals[i + 1], size=laterals[i].shape[2:], mode="bilinear", align_corners=False)
            laterals[i] = self.fpn_convs[i](self.lateral_convs[i](torch.cat([laterals[i], up], dim=1)))
        return laterals[:-1]
