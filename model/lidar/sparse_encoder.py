"""SparseEncoder: 3-D sparse convolutions over voxels -> dense BEV map (height folded into channels), on spconv 2.

Layout and key names follow BEVFusion's mmdet3d SparseEncoder with (x, y, z) order: `conv_input` (SubM 3^3),
`encoder_layers.encoder_layerK` = two SparseBasicBlocks (+ a stride-2 SparseConv3d for K=1..3), `conv_out`
(kernel (1,1,3), stride (1,1,2)) collapsing z 5 -> 2. Each conv module is a Sequential (conv, BN1d, ReLU): keys
`conv_input.0.weight`, `conv_input.1.running_mean`, ...

Weight layout: spconv 2 stores kernels as (out, k0, k1, k2, in); the original's spconv 1.x as (k0, k1, k2, in, out).
`convert_spconv1_weight` / `convert_spconv1_state_dict` turn original checkpoints into ours (and `to_spconv1_*` back).
"""

from __future__ import annotations

import spconv.pytorch as spconv
import torch
from torch import nn


def _bn(c):
    return nn.BatchNorm1d(c, eps=1e-3, momentum=0.01)


def _conv_module(cin, cout, kernel, stride=1, padding=0, subm=False, indice_key=None):
    if subm:
        conv = spconv.SubMConv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False, indice_key=indice_key)
    else:
        conv = spconv.SparseConv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False,
                                   indice_key=indice_key)
    return spconv.SparseSequential(conv, _bn(cout), nn.ReLU(inplace=True))


class SparseBasicBlock(spconv.SparseModule):
    """ResNet basic block on sparse tensors: two SubM 3^3 convs with BN, identity shortcut."""

    def __init__(self, channels: int, indice_key: str | None = None):
        super().__init__()
        self.conv1 = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key)
        self.bn1 = _bn(channels)
        self.conv2 = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key)
        self.bn2 = _bn(channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = x.features
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(self.relu(self.bn2(out.features) + identity))


class SparseEncoder(nn.Module):
    def __init__(self, in_channels=5, sparse_shape=(1440, 1440, 41), base_channels=16, output_channels=128,
                 encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
                 encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, (1, 1, 0)), (0, 0))):
        super().__init__()
        self.sparse_shape = list(sparse_shape)
        self.conv_input = _conv_module(in_channels, base_channels, 3, padding=1, subm=True, indice_key="subm1")
        self.encoder_layers = spconv.SparseSequential()
        cin = base_channels
        for i, blocks in enumerate(encoder_channels):
            layers = []
            for j, cout in enumerate(blocks):
                if j == len(blocks) - 1 and i != len(encoder_channels) - 1:
                    pad = encoder_paddings[i][j]
                    pad = tuple(pad) if isinstance(pad, (list, tuple)) else pad
                    layers.append(_conv_module(cin, cout, 3, stride=2, padding=pad, indice_key=f"spconv{i + 1}"))
                else:
                    layers.append(SparseBasicBlock(cout, indice_key=f"subm{i + 1}"))
                cin = cout
            self.encoder_layers.add_module(f"encoder_layer{i + 1}", spconv.SparseSequential(*layers))
        self.conv_out = _conv_module(cin, output_channels, (1, 1, 3), stride=(1, 1, 2), padding=0,
                                     indice_key="spconv_down2")

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        """feats [M, F], coords [M, 4] (b, x, y, z) -> [B, C*Z, X, Y] (c-major: channel c*Z + z)."""
        x = spconv.SparseConvTensor(feats, coords.int(), self.sparse_shape, batch_size)
        x = self.conv_input(x)
        x = self.encoder_layers(x)
        x = self.conv_out(x)
        return _dense_bev(x)


def _dense_bev(x) -> torch.Tensor:
    X, Y, Z = x.spatial_shape
    C = x.features.shape[1]
    idx = x.indices.long()
    flat = ((idx[:, 0] * X + idx[:, 1]) * Y + idx[:, 2]) * Z + idx[:, 3]
    dense = x.features.new_zeros(x.batch_size * X * Y * Z, C).index_copy(0, flat, x.features)
    return dense.view(x.batch_size, X, Y, Z, C).permute(0, 4, 3, 1, 2).reshape(x.batch_size, C * Z, X, Y)


def convert_spconv1_weight(w: torch.Tensor) -> torch.Tensor:
    """(k0, k1, k2, in, out) spconv 1.x kernel -> (out, k0, k1, k2, in) spconv 2 kernel."""
    return w.permute(4, 0, 1, 2, 3).contiguous()


def to_spconv1_weight(w: torch.Tensor) -> torch.Tensor:
    """(out, k0, k1, k2, in) spconv 2 kernel -> (k0, k1, k2, in, out) spconv 1.x kernel."""
    return w.permute(1, 2, 3, 4, 0).contiguous()


def convert_spconv1_state_dict(state_dict: dict, expected: dict | None = None) -> dict:
    """Return a copy of `state_dict` with 5-D sparse-conv kernels moved to spconv 2 layout.

    With `expected` (name -> shape of our model, e.g. from `model.state_dict()` or a key manifest) only keys whose
    permuted shape matches are converted, so an already-converted checkpoint passes through unchanged; without it
    every 5-D tensor is treated as spconv 1.x.
    """
    out = {}
    for k, v in state_dict.items():
        if getattr(v, "dim", lambda: 0)() == 5:
            conv = convert_spconv1_weight(v)
            if expected is None or (k in expected and tuple(expected[k]) == tuple(conv.shape)
                                    and tuple(expected[k]) != tuple(v.shape)):
                v = conv
        out[k] = v
    return out
