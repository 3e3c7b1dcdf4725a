"""ConvFuser (model/fuser.py) against the original.

Reference: mit-han-lab/bevfusion `mmdet3d/models/fusers/conv.py`: an nn.Sequential of Conv2d(sum(in), out, 3,
padding=1, bias=False), BatchNorm2d(out), ReLU, applied to `torch.cat(inputs, dim=1)` (camera first, as
`BEVFusion.forward` appends camera then LiDAR features). Keys therefore read `0.weight`, `1.*` under `fuser.`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.fuser import ConvFuser
from tests.helpers.equivalence import TOL, one_thread, randomize  # noqa: F401  (one_thread: fixture)


@pytest.mark.parametrize("in_channels,out", [((80, 256), 256), ((5, 7), 6)])
def test_state_dict_keys_and_shapes_match_original(in_channels, out):
    with torch.device("meta"):
        fuser = ConvFuser(in_channels, out)
    got = {k: tuple(v.shape) for k, v in fuser.state_dict().items()}
    assert got == {"0.weight": (out, sum(in_channels), 3, 3), "1.weight": (out,), "1.bias": (out,),
                   "1.running_mean": (out,), "1.running_var": (out,), "1.num_batches_tracked": ()}


@pytest.mark.parametrize("train", [False, True])
def test_forward_equals_original_formula(train):
    """Eval (running statistics) and train mode (batch statistics, and the running-stat update BN makes)."""
    fuser = randomize(ConvFuser((5, 7), 6), scale=0.1, bias_scale=0.5).train(train)
    sd = {k: v.clone() for k, v in fuser.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    cam, lidar = torch.randn(2, 5, 9, 11, generator=g), torch.randn(2, 7, 9, 11, generator=g)
    with torch.no_grad():
        ours = fuser([cam, lidar])
    x = F.conv2d(torch.cat([cam, lidar], 1), sd["0.weight"], None, padding=1)
    mean, var = sd["1.running_mean"].clone(), sd["1.running_var"].clone()
    x = F.batch_norm(x, mean, var, sd["1.weight"], sd["1.bias"], training=train, momentum=0.1, eps=1e-5)
    ref = F.relu(x)
    assert ours.shape == (2, 6, 9, 11)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fuser.state_dict()["1.running_mean"], mean, rtol=1e-5, atol=1e-5)
