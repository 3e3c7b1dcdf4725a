"""BEV map head (model/heads/bev_seg.py, losses.py) against the original BEVSegmentationHead.

Reference, written here from mit-han-lab/bevfusion `mmdet3d/models/heads/segm/vanilla.py`:
- BEVGridTransform: optional bilinear prescale (align_corners False); per axis the output cell centres
  `arange(omin + ostep / 2, omax, ostep)` normalised by the input scope to [-1, 1], `meshgrid(ij)`, the grid's last
  dim stacked as (v, u) (grid_sample's (w, h) for a [B, C, X, Y] map), `grid_sample(bilinear, align_corners=False)`.
- classifier: Conv3x3 (no bias)-BN-ReLU, Conv3x3 (no bias)-BN-ReLU, Conv1x1 (bias) to one logit per class.
- losses per class `f"{name}/{loss}"`: sigmoid_focal_loss(alpha=-1, gamma=2, mean) or BCE-with-logits (mean), in
  float32; inference returns sigmoid(logits).
Deliberate addition (module docstring of bev_seg.py): a per-class soft Dice term `f"{name}/dice"` =
dice_weight * (1 - (2 sum(p t) + smooth) / (sum p + sum t + smooth)) over the whole batch; dice_weight 0 gives the
original head's losses exactly. Asserted here as documented.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.heads.bev_seg import MAP_CLASSES, BEVGridTransform, BEVSegHeadConfig, BEVSegmentationHead
from model.heads.losses import binary_focal_loss, soft_dice_loss
from tests.helpers.equivalence import TOL, one_thread, randomize  # noqa: F401  (one_thread: fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

def _ref_grid_transform(x, input_scope, output_scope, prescale_factor=1.0):
    if prescale_factor != 1:
        x = F.interpolate(x, scale_factor=prescale_factor, mode="bilinear", align_corners=False)
    coords = []
    for (imin, imax, _), (omin, omax, ostep) in zip(input_scope, output_scope):
        v = torch.arange(omin + ostep / 2, omax, ostep)
        coords.append((v - imin) / (imax - imin) * 2 - 1)
    u, v = torch.meshgrid(coords, indexing="ij")
    grid = torch.stack([torch.stack([v, u], dim=-1)] * x.shape[0], dim=0)
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False)


def _ref_classifier(sd, x, training=False):
    def cbr(x, conv, bn):
        x = F.conv2d(x, sd[f"{conv}.weight"], None, padding=1)
        return F.relu(F.batch_norm(x, sd[f"{bn}.running_mean"].clone(), sd[f"{bn}.running_var"].clone(),
                                   sd[f"{bn}.weight"], sd[f"{bn}.bias"], training=training, eps=1e-5))

    x = cbr(cbr(x, "classifier.0", "classifier.1"), "classifier.3", "classifier.4")
    return F.conv2d(x, sd["classifier.6.weight"], sd["classifier.6.bias"])


def _ref_focal(logits, target, alpha=-1.0, gamma=2.0):
    logits, target = logits.float(), target.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.mean()


def _ref_dice(logits, target, smooth=1.0):
    p, t = torch.sigmoid(logits.float()).flatten(), target.float().flatten()
    return 1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


def _small_cfg(**kw):
    base = dict(in_channels=8, input_scope=((-12.0, 12.0, 0.8), (-12.0, 12.0, 0.8)),
                output_scope=((-10.0, 10.0, 0.5), (-10.0, 10.0, 0.5)))
    return BEVSegHeadConfig(**{**base, **kw})


def _head(**kw):
    torch.manual_seed(0)
    return randomize(BEVSegmentationHead(_small_cfg(**kw)), scale="fan_in", bias_scale=0.3)


def test_keys_and_shapes_load_into_the_original_layout():
    """Our state dict loads strictly into a module laid out like the original's classifier (and back)."""
    head = _head()
    c, n = 8, len(MAP_CLASSES)
    original = nn.Module()
    original.classifier = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True),
                                        nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True),
                                        nn.Conv2d(c, n, 1))
    original.load_state_dict(head.state_dict(), strict=True)
    assert {k: v.shape for k, v in original.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}


@pytest.mark.parametrize("scopes,prescale", [
    ((((-54.0, 54.0, 0.6), (-54.0, 54.0, 0.6)), ((-50.0, 50.0, 0.5), (-50.0, 50.0, 0.5))), 1.0),  # bundled full
    ((((-51.2, 51.2, 0.8), (-51.2, 51.2, 0.8)), ((-50.0, 50.0, 0.5), (-50.0, 50.0, 0.5))), 1.0),  # original seg
    ((((-12.0, 12.0, 0.8), (-16.0, 16.0, 0.8)), ((-10.0, 10.0, 0.5), (-15.0, 13.0, 0.25))), 2.0),  # skewed, prescale
])
def test_grid_transform_equals_original(scopes, prescale):
    inp, out = scopes
    size = [round((hi - lo) / s) for lo, hi, s in inp]
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    ours = BEVGridTransform(inp, out, prescale)(x)
    ref = _ref_grid_transform(x, inp, out, prescale)
    assert ours.shape == ref.shape == (2, 3, *[round((hi - lo) / s) for lo, hi, s in out])
    torch.testing.assert_close(ours, ref, **TOL)


def test_grid_transform_samples_metric_cell_centres():
    """Independent of grid_sample's conventions: a map linear in metric x and y is read back at the output cells'
    centres x = xmin + (i + .5) res, y = ymin + (j + .5) res (input cells: centres of `input_scope` cells)."""
    inp, out = ((-12.0, 12.0, 0.8), (-16.0, 16.0, 0.8)), ((-10.0, 10.0, 0.5), (-15.0, 13.0, 0.25))
    nx, ny = 30, 40
    cx = -12.0 + (torch.arange(nx) + 0.5) * 0.8
    cy = -16.0 + (torch.arange(ny) + 0.5) * 0.8
    gx, gy = torch.meshgrid(cx, cy, indexing="ij")
    x = torch.stack([gx, gy])[None]  # channel 0 = metric x, channel 1 = metric y
    ours = BEVGridTransform(inp, out)(x)[0]
    ox = -10.0 + (torch.arange(40) + 0.5) * 0.5
    oy = -15.0 + (torch.arange(112) + 0.5) * 0.25
    # away from the border half-cell, where bilinear sampling against zero padding fades out
    ix = (ox > cx[0]) & (ox < cx[-1])
    iy = (oy > cy[0]) & (oy < cy[-1])
    torch.testing.assert_close(ours[0][ix][:, iy], ox[ix, None].expand(-1, int(iy.sum())), **TOL)
    torch.testing.assert_close(ours[1][ix][:, iy], oy[None, iy].expand(int(ix.sum()), -1), **TOL)


def test_inference_equals_original():
    head = _head().eval()
    x = torch.randn(2, 8, 30, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = head(x)
        ours_list = head([x])  # the original accepts a list of levels and uses the first
    sd = head.state_dict()
    ref = torch.sigmoid(_ref_classifier(sd, _ref_grid_transform(x, head.cfg.input_scope, head.cfg.output_scope)))
    assert ours.shape == (2, 6, 40, 40)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(ours_list, ref, **TOL)


@pytest.mark.parametrize("loss,dice", [("focal", 0.0), ("focal", 1.0), ("xent", 0.5)])
def test_training_losses_equal_original(loss, dice):
    head = _head(loss=loss, dice_weight=dice).train()
    sd = {k: v.clone() for k, v in head.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 30, 30, generator=g)
    target = (torch.rand(2, 6, 40, 40, generator=g) < torch.tensor([0.5, 0.1, 0.2, 0.02, 0.1, 0.05])[:, None, None])
    target = target.float()
    target[:, 3] = 0  # a class absent from the whole batch: Dice stays defined
    ours = head(x, target)
    logits = _ref_classifier(sd, _ref_grid_transform(x, head.cfg.input_scope, head.cfg.output_scope), training=True)
    expect = {}
    for i, name in enumerate(MAP_CLASSES):
        if loss == "focal":
            expect[f"{name}/focal"] = _ref_focal(logits[:, i], target[:, i])
        else:
            expect[f"{name}/xent"] = F.binary_cross_entropy_with_logits(logits[:, i].float(), target[:, i].float())
        if dice > 0:
            expect[f"{name}/dice"] = dice * _ref_dice(logits[:, i], target[:, i])
    assert list(ours) == list(expect)  # same names, same order as the original's dict (Dice after each class)
    for key in expect:
        torch.testing.assert_close(ours[key], expect[key], **TOL, msg=key)
    assert all(v.requires_grad for v in ours.values())


def test_map_loss_functions_equal_original_formulas():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 17, 11, generator=gen) * 3
    target = (torch.rand(3, 17, 11, generator=gen) > 0.7).float()
    for alpha in (-1.0, 0.25):
        torch.testing.assert_close(binary_focal_loss(logits, target, 2.0, alpha), _ref_focal(logits, target, alpha),
                                   **TOL)
    torch.testing.assert_close(binary_focal_loss(logits.bfloat16(), target, 2.0, -1.0),
                               _ref_focal(logits.bfloat16(), target), **TOL)  # both upcast to float32 first
    torch.testing.assert_close(soft_dice_loss(logits, target), _ref_dice(logits, target), **TOL)
    # an empty prediction of an empty mask is a perfect score, not 0/0
    assert soft_dice_loss(torch.full((4, 4), -60.0), torch.zeros(4, 4)).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(soft_dice_loss(torch.zeros(0), torch.zeros(0)).item())
