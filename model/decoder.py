"""BEV decoder: SECOND (two strided 2-D conv stages) + SECONDFPN (bring both to stride 1, concatenate).

Keys: `decoder.backbone.blocks.i.j` (Conv, BN, ReLU repeated: convs at j = 0, 3, 6, ...),
`decoder.neck.deblocks.i.{0,1}` (1x1 conv or 2x2 transposed conv, BN). BN eps 1e-3, momentum 0.01 as in mmdet3d.
"""

from __future__ import annotations

import torch
from torch import nn


def _bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class SECOND(nn.Module):
    def __init__(self, in_channels=256, out_channels=(128, 256), layer_nums=(5, 5), layer_strides=(1, 2)):
        super().__init__()
        cins = [in_channels, *out_channels[:-1]]
        self.blocks = nn.ModuleList()
        for cin, cout, n, s in zip(cins, out_channels, layer_nums, layer_strides):
            layers = [nn.Conv2d(cin, cout, 3, stride=s, padding=1, bias=False), _bn(cout), nn.ReLU(True)]
            for _ in range(n):
                layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), _bn(cout), nn.ReLU(True)]
            self.blocks.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


class SECONDFPN(nn.Module):
    def __init__(self, in_channels=(128, 256), out_channels=(256, 256), upsample_strides=(1, 2)):
        super().__init__()
        self.deblocks = nn.ModuleList()
        for cin, cout, s in zip(in_channels, out_channels, upsample_strides):
            if s >= 1 and s != 1:
                up = nn.ConvTranspose2d(cin, cout, s, stride=s, bias=False)
            else:
                # stride 1 (use_conv_for_no_stride) or a fractional stride: a plain strided conv
                k = max(1, round(1 / s))
                up = nn.Conv2d(cin, cout, k, stride=k, bias=False)
            self.deblocks.append(nn.Sequential(up, _bn(cout), nn.ReLU(True)))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        ups = [deblock(x) for deblock, x in zip(self.deblocks, xs)]
        return [torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]]
