"""GeneralizedLSSFPN (model/camera/fpn.py) against the original BEVFusion neck.

Reference: mit-han-lab/bevfusion `mmdet3d/models/necks/generalized_lss.py` with the det/seg configs' arguments
(`norm_cfg: BN2d`, `act_cfg: ReLU`, `upsample_cfg: {mode: bilinear, align_corners: false}`): for each level from the
second-finest down, upsample the coarser level to this level's size, concatenate [this, upsampled], mmcv
ConvModule 1x1 (`lateral_convs.i`), ConvModule 3x3 padding 1 (`fpn_convs.i`); the finest `len(in) - 1` levels are
returned. ConvModule with a norm layer has no conv bias (mmcv `bias="auto"`). The reference below is written from
those formulas with functional ops; the optional mmcv check builds the same neck from mmcv's own ConvModule.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from model.camera.fpn import GeneralizedLSSFPN
from tests.helpers.equivalence import TOL, one_thread, randomize  # noqa: F401  (one_thread: fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

def _conv_bn_relu(x, sd, prefix, padding):
    """mmcv ConvModule(conv -> BN (eval) -> ReLU) with a bias-free conv."""
    x = F.conv2d(x, sd[f"{prefix}.conv.weight"], None, padding=padding)
    x = F.batch_norm(x, sd[f"{prefix}.bn.running_mean"], sd[f"{prefix}.bn.running_var"], sd[f"{prefix}.bn.weight"],
                     sd[f"{prefix}.bn.bias"], training=False, eps=1e-5)
    return F.relu(x)


def _reference_forward(sd, inputs):
    laterals = list(inputs)
    used = len(laterals) - 1
    for i in range(used - 1, -1, -1):
        up = F.interpolate(laterals[i + 1], size=laterals[i].shape[2:], mode="bilinear", align_corners=False)
        x = torch.cat([laterals[i], up], dim=1)
        x = _conv_bn_relu(x, sd, f"lateral_convs.{i}", 0)
        laterals[i] = _conv_bn_relu(x, sd, f"fpn_convs.{i}", 1)
    return tuple(laterals[:used])


def _expected_shapes(in_channels, out):
    """The original's constructor: level i's 1x1 conv reads in[i] + (in[i+1] for the last used level, else out)."""
    shapes = {}
    end = len(in_channels) - 1
    for i in range(end):
        cin = in_channels[i] + (in_channels[i + 1] if i == end - 1 else out)
        for name, w in (("lateral_convs", (out, cin, 1, 1)), ("fpn_convs", (out, out, 3, 3))):
            shapes[f"{name}.{i}.conv.weight"] = w
            for k in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{name}.{i}.bn.{k}"] = (out,)
            shapes[f"{name}.{i}.bn.num_batches_tracked"] = ()
    return shapes


@pytest.mark.parametrize("in_channels,out", [((192, 384, 768), 256), ((12, 20, 28, 36), 16)])
def test_state_dict_keys_and_shapes_match_original(in_channels, out):
    with torch.device("meta"):
        neck = GeneralizedLSSFPN(in_channels, out)
    got = {k: tuple(v.shape) for k, v in neck.state_dict().items()}
    assert got == _expected_shapes(in_channels, out)


@pytest.mark.parametrize("in_channels", [(12, 20, 28), (6, 10, 14, 18)])
def test_forward_equals_original_formula(in_channels):
    """Odd feature sizes (Swin stages of a 72x100 image: 9x13, 5x7, 3x4) make the bilinear resize non-trivial."""
    torch.manual_seed(0)
    neck = randomize(GeneralizedLSSFPN(in_channels, 16), scale=0.2, bias_scale=0.5).eval()
    g = torch.Generator().manual_seed(1)
    sizes = [(9, 13), (5, 7), (3, 4), (2, 2)][:len(in_channels)]
    inputs = [torch.randn(2, c, *hw, generator=g) for c, hw in zip(in_channels, sizes)]
    with torch.no_grad():
        ours = neck(inputs)
        ref = _reference_forward(neck.state_dict(), inputs)
    assert len(ours) == len(ref) == len(in_channels) - 1
    for level, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == (2, 16, *sizes[level])
        torch.testing.assert_close(a, b, **TOL)
    # the inputs are not modified (the original's forward only rebinds list entries)
    assert inputs[0].shape[1] == in_channels[0]


@pytest.mark.mmdet
def test_neck_built_from_mmcv_convmodule_loads_ours_strictly_and_agrees():
    """mmcv's own ConvModule (the original's building block, BN2d + ReLU, bias 'auto') takes our weights as they are."""
    try:
        cnn = importlib.import_module("mmcv.cnn")
    except Exception as exc:  # ImportError, or mmcv's version checks
        pytest.skip(f"mmcv unavailable ({type(exc).__name__}: {exc}); run `bash tests/setup_extras.sh`")
    in_channels, out = (12, 20, 28), 16
    neck = randomize(GeneralizedLSSFPN(in_channels, out), scale=0.2, bias_scale=0.5).eval()

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            norm, act = dict(type="BN2d", requires_grad=True), dict(type="ReLU", inplace=True)
            self.lateral_convs = torch.nn.ModuleList()
            self.fpn_convs = torch.nn.ModuleList()
            for i in range(len(in_channels) - 1):
                cin = in_channels[i] + (in_channels[i + 1] if i == len(in_channels) - 2 else out)
                self.lateral_convs.append(cnn.ConvModule(cin, out, 1, norm_cfg=norm, act_cfg=act, inplace=False))
                self.fpn_convs.append(cnn.ConvModule(out, out, 3, padding=1, norm_cfg=norm, act_cfg=act,
                                                     inplace=False))

    theirs = Theirs().eval()
    theirs.load_state_dict(neck.state_dict(), strict=True)
    g = torch.Generator().manual_seed(2)
    inputs = [torch.randn(1, c, *hw, generator=g) for c, hw in zip(in_channels, [(9, 13), (5, 7), (3, 4)])]
    laterals = list(inputs)
    with torch.no_grad():
        for i in range(1, -1, -1):
            up = F.interpolate(laterals[i + 1], size=laterals[i].shape[2:], mode="bilinear", align_corners=False)
            laterals[i] = theirs.fpn_convs[i](theirs.lateral_convs[i](torch.cat([laterals[i], up], 1)))
        ours = neck(inputs)
    for a, b in zip(ours, laterals[:2]):
        torch.testing.assert_close(a, b, **TOL)
