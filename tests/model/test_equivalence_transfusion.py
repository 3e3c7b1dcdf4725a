"""TransFusionHead (model/heads/transfusion.py, losses.py, assigner.py) against the original BEVFusion head.

References, written here from the original's formulas (mit-han-lab/bevfusion):
- forward: `mmdet3d/models/heads/bbox/transfusion.py` `forward_single` (shared 3x3 conv, heatmap head, sigmoid,
  3x3 local maximum with a zero border and kernel 1 for nuScenes classes 8 and 9, top `num_proposals` by a
  descending argsort over classes x cells, class one-hot encoding added to the gathered features, BEV positions
  `linspace(0, n - 1, n) + 0.5`, every decoder layer's predictions with `center += query_pos`), and
  `mmdet3d/models/utils/transformer.py` (sequence-first post-norm decoder layer; the cross-attention *value* is
  key + positional embedding; its MultiheadAttention scales q by head_dim^-0.5 before q k^T).
- heatmap targets: `get_targets_single` (radius from `gaussian_radius((length, width), gaussian_overlap)`,
  `max(min_radius, int(radius))`, centre cell `((x - pc_min) / voxel / out_size_factor).to(int32)`, drawn into a
  [C, Y, X] map at `center_int[[1, 0]]`) with `mmdet3d/core/utils/gaussian.py` (`gaussian_2d` in float64 with
  sigma = diameter / 6, clipped windows at the map border, `torch.max` into the map).
- assignment: `mmdet3d/core/bbox/assigners/hungarian_assigner.py` (HungarianAssigner3D: FocalLossCost (mmdet 2.x
  formula) + BBoxBEVL1Cost (BEV centres normalised by the point-cloud range, cdist p=1) + IoU3DCost (-IoU), weights
  0.15 / 0.25 / 0.25 from `configs/nuscenes/det/transfusion/default.yaml`, scipy linear_sum_assignment).
- losses: `TransFusionHead.loss` (GaussianFocalLoss on clip_sigmoid(dense heatmap) averaged over the number of 1s,
  sigmoid FocalLoss(gamma 2, alpha 0.25) on every query with background = num_classes, L1 with code weights, both
  averaged over the number of positives of all layers, weight 0.25 on L1; matched_ious = mean over samples).
- decode: `mmdet3d/core/bbox/coders/transfusion_bbox_coder.py` and `get_bboxes` (score = sigmoid(class logit) x
  query heatmap score x one-hot of the query class; max over classes; metric centre; exp(dim); atan2(sin, cos)).

Box convention (box_coder.py; CKPT's): the head here uses the coder's default `mmdet3d` convention, in which boxes
carry z at the box centre. The original's coder adds h / 2 to its bottom-z boxes when encoding and subtracts it when
decoding, so for the same physical boxes the encode targets are identical and our decoded z = the original's +
h / 2; the tests feed the reference bottom-z copies and assert exactly that. (The `mit-han-lab` convention for
original checkpoints, with its (w, l, h, -yaw - pi/2) order, is tested with the coder, not here.)
IoUs in the reference come from shapely polygons (not from our iou3d), so the assignment check is independent.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from model.heads import TransFusionHead, TransFusionHeadConfig
from model.heads.assigner import BBoxBEVL1Cost, FocalLossCost
from model.heads.losses import gaussian_focal_loss, gaussian_heatmap, gaussian_radius, sigmoid_focal_loss, \
    weighted_l1_loss
from tests.helpers.equivalence import TOL, one_thread, randomize  # noqa: F401  (one_thread: fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

shapely_geometry = pytest.importorskip("shapely.geometry")

# 32 x 32 BEV cells of 1 m; two decoder layers with auxiliary outputs so per-layer slicing is exercised.
TINY = dict(in_channels=24, hidden_channel=32, num_heads=4, ffn_channel=48, num_proposals=20, head_conv=16,
            num_decoder_layers=2, point_cloud_range=(-16.0, -16.0, -5.0, 16.0, 16.0, 3.0),
            voxel_size=(0.5, 0.5, 0.2), out_size_factor=2, post_center_range=(-12.0, -12.0, -10.0, 12.0, 12.0, 10.0))


def _head(**kw) -> TransFusionHead:
    torch.manual_seed(0)
    head = randomize(TransFusionHead(TransFusionHeadConfig(**{**TINY, **kw})), scale="fan_in", bias_scale=0.3).eval()
    if hasattr(head.bbox_coder, "convention"):
        head.bbox_coder.convention = "mmdet3d"  # the centre-z convention the references below assume
    return head


class _Tracked(dict):
    """A state dict that remembers which keys the reference read (every parameter must be used, none invented)."""

    def __init__(self, sd):
        super().__init__(sd)
        self.used: set[str] = set()

    def __getitem__(self, key):
        self.used.add(key)
        return super().__getitem__(key)


# ------------------------------------------------------------------------------------------- reference forward


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, eps=1e-5)


def _posembed(sd, p, xyz):
    x = xyz.transpose(1, 2)
    x = F.relu(_bn(F.conv1d(x, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"]), sd, f"{p}.1"))
    return F.conv1d(x, sd[f"{p}.3.weight"], sd[f"{p}.3.bias"])  # B, C, P


def _mha(sd, p, query, key, value, num_heads):
    """Sequence-first attention as the original's multi_head_attention_forward: [L, B, E] -> [L, B, E]."""
    w, b = sd[f"{p}.in_proj_weight"], sd[f"{p}.in_proj_bias"]
    L, Bn, E = query.shape
    hd = E // num_heads
    q = F.linear(query, w[:E], b[:E]) * float(hd) ** -0.5
    k = F.linear(key, w[E:2 * E], b[E:2 * E])
    v = F.linear(value, w[2 * E:], b[2 * E:])
    q = q.reshape(L, Bn * num_heads, hd).transpose(0, 1)
    k = k.reshape(-1, Bn * num_heads, hd).transpose(0, 1)
    v = v.reshape(-1, Bn * num_heads, hd).transpose(0, 1)
    att = torch.bmm(q, k.transpose(1, 2)).softmax(-1)
    out = torch.bmm(att, v).transpose(0, 1).reshape(L, Bn, E)
    return F.linear(out, sd[f"{p}.out_proj.weight"], sd[f"{p}.out_proj.bias"])


def _decoder_layer(sd, p, query, key, query_pos, key_pos, num_heads):
    qpe = _posembed(sd, f"{p}.self_posembed.position_embedding_head", query_pos).permute(2, 0, 1)
    kpe = _posembed(sd, f"{p}.cross_posembed.position_embedding_head", key_pos).permute(2, 0, 1)
    query, key = query.permute(2, 0, 1), key.permute(2, 0, 1)
    E = query.shape[-1]

    def ln(x, i):
        return F.layer_norm(x, (E,), sd[f"{p}.norm{i}.weight"], sd[f"{p}.norm{i}.bias"], eps=1e-5)

    q = query + qpe
    query = ln(query + _mha(sd, f"{p}.self_attn", q, q, q, num_heads), 1)
    query = ln(query + _mha(sd, f"{p}.multihead_attn", query + qpe, key + kpe, key + kpe, num_heads), 2)
    ffn = F.linear(F.relu(F.linear(query, sd[f"{p}.linear1.weight"], sd[f"{p}.linear1.bias"])),
                   sd[f"{p}.linear2.weight"], sd[f"{p}.linear2.bias"])
    return ln(query + ffn, 3).permute(1, 2, 0)


def _ffn(sd, p, x):
    x = F.relu(_bn(F.conv1d(x, sd[f"{p}.0.conv.weight"]), sd, f"{p}.0.bn"))
    return F.conv1d(x, sd[f"{p}.1.weight"], sd[f"{p}.1.bias"])


def _ref_forward(sd, cfg: TransFusionHeadConfig, x):
    Bn, nc, P = x.shape[0], cfg.num_classes, cfg.num_proposals
    feat = F.conv2d(x, sd["shared_conv.weight"], sd["shared_conv.bias"], padding=1)
    C, X, Y = feat.shape[1:]
    flat = feat.view(Bn, C, -1)
    gx, gy = torch.meshgrid(torch.linspace(0, X - 1, X), torch.linspace(0, Y - 1, Y), indexing="ij")
    bev_pos = torch.cat([(gx + 0.5)[None], (gy + 0.5)[None]], 0)[None].view(1, 2, -1).permute(0, 2, 1)
    bev_pos = bev_pos.repeat(Bn, 1, 1)
    h = F.relu(_bn(F.conv2d(feat, sd["heatmap_head.0.conv.weight"], None, padding=1), sd, "heatmap_head.0.bn"))
    dense = F.conv2d(h, sd["heatmap_head.1.weight"], sd["heatmap_head.1.bias"], padding=1)
    heat = dense.sigmoid()
    k = cfg.nms_kernel_size
    pad = k // 2
    local_max = torch.zeros_like(heat)
    local_max[:, :, pad:-pad, pad:-pad] = F.max_pool2d(heat, kernel_size=k, stride=1, padding=0)
    local_max[:, 8] = heat[:, 8]  # nuScenes pedestrian, traffic_cone
    local_max[:, 9] = heat[:, 9]
    heat = (heat * (heat == local_max)).view(Bn, nc, -1)
    top = heat.view(Bn, -1).argsort(dim=-1, descending=True)[..., :P]
    labels, index = top // heat.shape[-1], top % heat.shape[-1]
    qf = flat.gather(-1, index[:, None, :].expand(-1, C, -1))
    qf = qf + F.conv1d(F.one_hot(labels, nc).permute(0, 2, 1).float(), sd["class_encoding.weight"],
                       sd["class_encoding.bias"])
    qpos = bev_pos.gather(1, index[:, :, None].expand(-1, -1, 2))
    layers = []
    for i in range(cfg.num_decoder_layers):
        qf = _decoder_layer(sd, f"decoder.{i}", qf, flat, qpos, bev_pos, cfg.num_heads)
        res = {n: _ffn(sd, f"prediction_heads.{i}.{n}", qf) for n in (*cfg.common_heads, "heatmap")}
        res["center"] = res["center"] + qpos.permute(0, 2, 1)
        layers.append(res)
        qpos = res["center"].detach().clone().permute(0, 2, 1)
    out = {key: torch.cat([r[key] for r in layers], dim=-1) for key in layers[0]}
    out["query_heatmap_score"] = heat.gather(-1, index[:, None, :].expand(-1, nc, -1))
    out["dense_heatmap"] = dense
    out["query_labels"] = labels
    return out


# ------------------------------------------------------------------------------------------- reference targets


def _ref_radius(length: torch.Tensor, width: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """gaussian_radius((height, width)) of the original, on float32 scalar tensors."""
    height = length
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * 1 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2 ** 2 - 4 * 4 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _ref_draw(heatmap: torch.Tensor, center, radius: int) -> None:
    """draw_heatmap_gaussian: float64 Gaussian window clipped at the border, max into heatmap [rows, cols]."""
    d = 2 * radius + 1
    sigma = d / 6
    m = (d - 1.0) / 2.0
    yy, xx = np.ogrid[-m:m + 1, -m:m + 1]
    gauss = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
    gauss[gauss < np.finfo(gauss.dtype).eps * gauss.max()] = 0
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape[0:2]
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    window = heatmap[y - top:y + bottom, x - left:x + right]
    g = torch.from_numpy(gauss[radius - top:radius + bottom, radius - left:radius + right]).float()
    if min(g.shape) > 0 and min(window.shape) > 0:
        torch.max(window, g, out=window)


def _ref_heatmap(cfg: TransFusionHeadConfig, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    size_x, size_y = cfg.grid_size
    pc = torch.tensor(cfg.point_cloud_range)
    vs = torch.tensor(cfg.voxel_size)
    f = cfg.out_size_factor
    heatmap = torch.zeros(cfg.num_classes, size_y, size_x)
    for box, label in zip(boxes.float(), labels):
        width, length = box[3] / vs[0] / f, box[4] / vs[1] / f
        if width > 0 and length > 0:
            radius = max(cfg.min_radius, int(_ref_radius(length, width, cfg.gaussian_overlap)))
            cx, cy = (box[0] - pc[0]) / vs[0] / f, (box[1] - pc[1]) / vs[1] / f
            center_int = torch.tensor([cx, cy], dtype=torch.float32).to(torch.int32)
            _ref_draw(heatmap[label], center_int[[1, 0]], radius)
    return heatmap


def _corners(b):
    c, s = math.cos(b[6]), math.sin(b[6])
    return [(b[0] + c * dx * b[3] / 2 - s * dy * b[4] / 2, b[1] + s * dx * b[3] / 2 + c * dy * b[4] / 2)
            for dx, dy in ((1, 1), (-1, 1), (-1, -1), (1, -1))]


def _ref_iou3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """BboxOverlaps3D('lidar') from polygons: BEV intersection x z overlap / union volume; z = box bottom."""
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i, p in enumerate(a.double().tolist()):
        pp = shapely_geometry.Polygon(_corners(p))
        for j, q in enumerate(b.double().tolist()):
            inter = pp.intersection(shapely_geometry.Polygon(_corners(q))).area
            inter *= max(0.0, min(p[2] + p[5], q[2] + q[5]) - max(p[2], q[2]))
            out[i, j] = inter / max(p[3] * p[4] * p[5] + q[3] * q[4] * q[5] - inter, 1e-8)
    return out


def _ref_focal_cost(logits, gt_labels, alpha=0.25, gamma=2.0, weight=0.15, eps=1e-12):
    p = logits.sigmoid()
    neg = -(1 - p + eps).log() * (1 - alpha) * p.pow(gamma)
    pos = -(p + eps).log() * alpha * (1 - p).pow(gamma)
    return (pos[:, gt_labels] - neg[:, gt_labels]) * weight


def _ref_bev_l1_cost(boxes, gt, pc_range, weight=0.25):
    start = boxes.new_tensor(pc_range[0:2])
    extent = boxes.new_tensor(pc_range[3:5]) - start
    return torch.cdist((boxes[:, :2] - start) / extent, (gt[:, :2] - start) / extent, p=1) * weight


def _ref_decode(cfg, heat, rot, dim, center, height, vel):
    """The original coder (no filter) -> [B, P, 9] boxes with the original's bottom z, scores, labels."""
    scores, labels = heat.max(1).values, heat.max(1).indices
    f, vs, pc = cfg.out_size_factor, cfg.voxel_size, cfg.point_cloud_range
    cx = center[:, 0] * f * vs[0] + pc[0]
    cy = center[:, 1] * f * vs[1] + pc[1]
    d = dim.exp()
    z = height[:, 0] - d[:, 2] * 0.5
    yaw = torch.atan2(rot[:, 0], rot[:, 1])
    boxes = torch.stack([cx, cy, z, d[:, 0], d[:, 1], d[:, 2], yaw, vel[:, 0], vel[:, 1]], dim=-1)
    return boxes, scores, labels


def _ref_encode(cfg, boxes_bottom):
    f, vs, pc = cfg.out_size_factor, cfg.voxel_size, cfg.point_cloud_range
    t = torch.zeros(len(boxes_bottom), 10)
    t[:, 0] = (boxes_bottom[:, 0] - pc[0]) / (f * vs[0])
    t[:, 1] = (boxes_bottom[:, 1] - pc[1]) / (f * vs[1])
    t[:, 3:6] = boxes_bottom[:, 3:6].log()
    t[:, 2] = boxes_bottom[:, 2] + boxes_bottom[:, 5] * 0.5
    t[:, 6], t[:, 7] = torch.sin(boxes_bottom[:, 6]), torch.cos(boxes_bottom[:, 6])
    t[:, 8:10] = boxes_bottom[:, 7:9]
    return t


def _ref_sigmoid_focal(logits, labels, weights, avg, gamma=2.0, alpha=0.25):
    nc = logits.shape[1]
    t = F.one_hot(labels, nc + 1)[:, :nc].float()
    p = logits.sigmoid()
    pt = (1 - p) * t + p * (1 - t)
    w = (alpha * t + (1 - alpha) * (1 - t)) * pt.pow(gamma)
    return (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * w * weights[:, None]).sum() / avg


def _ref_gaussian_focal(pred, target, avg, alpha=2.0, gamma=4.0, eps=1e-12):
    pos = -(pred + eps).log() * (1 - pred).pow(alpha) * target.eq(1)
    neg = -(1 - pred + eps).log() * pred.pow(alpha) * (1 - target).pow(gamma)
    return (pos + neg).sum() / avg


def _ref_loss(cfg: TransFusionHeadConfig, preds, gt_boxes_centre, gt_labels):
    """get_targets + loss of the original, with its boxes (bottom z) made from ours (centre z)."""
    P, nc, L = cfg.num_proposals, cfg.num_classes, cfg.num_decoder_layers
    per_sample = []
    for b, (gt_c, gl) in enumerate(zip(gt_boxes_centre, gt_labels)):
        gt = gt_c.clone().float()
        gt[:, 2] = gt[:, 2] - gt[:, 5] / 2
        sl = {k: v[b:b + 1].detach() for k, v in preds.items()}
        boxes, _, _ = _ref_decode(cfg, sl["heatmap"], sl["rot"], sl["dim"], sl["center"], sl["height"], sl["vel"])
        boxes = boxes[0]
        total = boxes.shape[0]
        assigned, overlaps = torch.zeros(total, dtype=torch.long), torch.zeros(total, dtype=torch.float64)
        for layer in range(L):
            s = slice(layer * P, (layer + 1) * P)
            iou = _ref_iou3d(boxes[s], gt)
            cost = (_ref_focal_cost(sl["heatmap"][0, :, s].T, gl).double()
                    + _ref_bev_l1_cost(boxes[s], gt, cfg.point_cloud_range).double() - 0.25 * iou)
            rows, cols = linear_sum_assignment(cost.numpy())
            rows, cols = torch.from_numpy(rows) + layer * P, torch.from_numpy(cols)
            assigned[rows] = cols + 1
            overlaps[rows] = iou[rows - layer * P, cols]
        pos = (assigned > 0).nonzero()[:, 0]
        labels = torch.full((total,), nc, dtype=torch.long)
        labels[pos] = gl[assigned[pos] - 1]
        bbox_targets, bbox_weights = torch.zeros(total, 10), torch.zeros(total, 10)
        bbox_targets[pos] = _ref_encode(cfg, gt[assigned[pos] - 1])
        bbox_weights[pos] = 1.0
        mean_iou = float(overlaps[pos].clamp(0, 1).sum() / max(len(pos), 1))
        per_sample.append((labels, torch.ones(total), bbox_targets, bbox_weights, len(pos), mean_iou,
                           _ref_heatmap(cfg, gt_c, gl), assigned))
    labels, lw, bt, bw, npos, ious, heat, assigned = zip(*per_sample)
    labels, lw, bt, bw, heat = (torch.stack(t) for t in (labels, lw, bt, bw, heat))
    num_pos = sum(npos)
    out = {"loss_heatmap": _ref_gaussian_focal(F.sigmoid(preds["dense_heatmap"].detach()).clamp(1e-4, 1 - 1e-4),
                                               heat, max(float(heat.eq(1).sum()), 1.0))}
    code_w = torch.tensor(cfg.code_weights)
    for layer in range(L):
        prefix = "layer_-1" if layer == L - 1 else f"layer_{layer}"
        s = slice(layer * P, (layer + 1) * P)
        cls = preds["heatmap"][..., s].detach().permute(0, 2, 1).reshape(-1, nc)
        out[f"{prefix}_loss_cls"] = _ref_sigmoid_focal(cls, labels[:, s].reshape(-1), lw[:, s].reshape(-1),
                                                       max(num_pos, 1))
        box = torch.cat([preds[n][..., s].detach() for n in ("center", "height", "dim", "rot", "vel")], 1)
        diff = (box.permute(0, 2, 1) - bt[:, s]).abs() * bw[:, s] * code_w
        out[f"{prefix}_loss_bbox"] = 0.25 * diff.sum() / max(num_pos, 1)
    out["matched_ious"] = torch.tensor(float(np.mean(ious)))
    return out, heat, torch.stack(assigned)


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("layers", [1, 2])
def test_forward_equals_original(layers):
    head = _head(num_decoder_layers=layers)
    x = torch.randn(2, TINY["in_channels"], 32, 32, generator=torch.Generator().manual_seed(1))
    sd = _Tracked(head.state_dict())
    with torch.no_grad():
        ours = head(x)
        ref = _ref_forward(sd, head.cfg, x)
    # every parameter/statistic is read by the reference under the original's name, and nothing else exists
    assert {k for k in sd if not k.endswith("num_batches_tracked")} == sd.used
    assert set(ours) == set(ref)
    assert torch.equal(ours["query_labels"], ref["query_labels"])
    for key in ref:
        assert ours[key].shape == ref[key].shape, key
        torch.testing.assert_close(ours[key], ref[key].to(ours[key].dtype), **TOL, msg=key)
    assert ours["center"].shape == (2, 2, 20 * layers)
    assert ours["query_heatmap_score"].max(1).values.min() > 0  # 20 distinct local maxima, no tie at 0


def _boxes(n, gen, inside=True):
    b = torch.zeros(n, 9)
    span = 15.5 if inside else 19.0
    b[:, :2] = (torch.rand(n, 2, generator=gen) * 2 - 1) * span
    b[:, 2] = torch.rand(n, generator=gen) * 2 - 1
    b[:, 3:6] = torch.rand(n, 3, generator=gen) * torch.tensor([12.0, 4.0, 2.0]) + 0.3
    b[:, 6] = (torch.rand(n, generator=gen) * 2 - 1) * math.pi
    b[:, 7:9] = torch.randn(n, 2, generator=gen)
    return b


def test_heatmap_targets_equal_original_draw():
    """Includes boxes whose centre cell lies outside the map: the original draws the visible part of their Gaussian."""
    head = _head()
    gen = torch.Generator().manual_seed(3)
    boxes = torch.cat([_boxes(30, gen), _boxes(12, gen, inside=False)])
    boxes[-1, 3] = 0.0  # zero size: skipped by both
    labels = torch.randint(0, 10, (len(boxes),), generator=gen)
    ours = head._heatmap_target(boxes, labels, torch.device("cpu"))
    ref = _ref_heatmap(head.cfg, boxes, labels)
    assert ours.shape == ref.shape == (10, 32, 32)  # square: the original's [C, Y, X] drawn at [cx, cy] is [C, X, Y]
    assert ref.eq(1).sum() >= 25
    torch.testing.assert_close(ours, ref, **TOL)


def test_gaussian_radius_equals_original():
    gen = torch.Generator().manual_seed(4)
    length, width = torch.rand(200, generator=gen) * 30 + 0.05, torch.rand(200, generator=gen) * 30 + 0.05
    for overlap in (0.1, 0.5, 0.7):
        ours = gaussian_radius(width, length, overlap)
        ref = torch.stack([_ref_radius(a, b, overlap) for a, b in zip(length, width)])
        torch.testing.assert_close(ours, ref, **TOL)
        assert torch.equal(ours.to(torch.int64), ref.to(torch.int64))  # the truncated radius drives the targets


def test_match_costs_equal_original():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(20, 10, generator=gen) * 3
    gt_labels = torch.randint(0, 10, (6,), generator=gen)
    torch.testing.assert_close(FocalLossCost(0.15, 0.25, 2.0)(logits, gt_labels), _ref_focal_cost(logits, gt_labels),
                               **TOL)
    boxes, gt = _boxes(20, gen), _boxes(6, gen)
    pcr = TINY["point_cloud_range"]
    torch.testing.assert_close(BBoxBEVL1Cost(0.25)(boxes, gt, pcr), _ref_bev_l1_cost(boxes, gt, pcr), **TOL)


def _scene(head, seed=6):
    """Predictions from a forward pass, and GT boxes placed on some of the decoded predictions (so IoUs are real)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, TINY["in_channels"], 32, 32, generator=gen)
    with torch.no_grad():
        preds = head(x)
        # shrink the regressed sizes to object-like ones so decoded boxes overlap their neighbours and GT
        preds["dim"] = preds["dim"] * 0.3 + 0.7
    gt_boxes, gt_labels = [], []
    P = head.num_proposals
    for b, n in enumerate((5, 3)):
        boxes, _, _ = _ref_decode(head.cfg, *(preds[k][b:b + 1, :, -P:] for k in ("heatmap", "rot", "dim", "center",
                                                                                   "height", "vel")))
        pick = torch.randperm(P, generator=gen)[:n]
        gt = boxes[0, pick].clone()
        gt[:, 2] += gt[:, 5] / 2  # ours: centre z
        gt[:, :2] += torch.randn(n, 2, generator=gen) * 0.3
        gt[:, 3:6] *= 1 + 0.1 * torch.rand(n, 3, generator=gen)
        gt[:, 6] += 0.2 * torch.randn(n, generator=gen)
        gt_boxes.append(gt)
        gt_labels.append(torch.randint(0, 10, (n,), generator=gen))
    return preds, gt_boxes, gt_labels


def test_hungarian_assignment_equals_original():
    head = _head()
    preds, gt_boxes, gt_labels = _scene(head)
    P = head.num_proposals
    for b in range(2):
        decoded = head.bbox_coder.decode(*(preds[k][b:b + 1] for k in ("heatmap", "rot", "dim", "center", "height")),
                                         preds["vel"][b:b + 1])[0]["bboxes"]
        ref_boxes, _, _ = _ref_decode(head.cfg, *(preds[k][b:b + 1] for k in ("heatmap", "rot", "dim", "center",
                                                                             "height", "vel")))
        gt_bottom = gt_boxes[b].clone()
        gt_bottom[:, 2] -= gt_bottom[:, 5] / 2
        for layer in range(2):
            s = slice(layer * P, (layer + 1) * P)
            logits = preds["heatmap"][b, :, s].T
            res = head.assigner.assign(decoded[s], gt_boxes[b], gt_labels[b], logits, head.cfg.point_cloud_range)
            iou = _ref_iou3d(ref_boxes[0, s], gt_bottom)
            cost = (_ref_focal_cost(logits, gt_labels[b]).double()
                    + _ref_bev_l1_cost(ref_boxes[0, s], gt_bottom, head.cfg.point_cloud_range).double() - 0.25 * iou)
            rows, cols = linear_sum_assignment(cost.numpy())
            expect = torch.zeros(P, dtype=torch.long)
            expect[torch.from_numpy(rows)] = torch.from_numpy(cols) + 1
            assert torch.equal(res.assigned_gt_inds, expect)
            overlaps = torch.zeros(P, dtype=torch.float64)
            overlaps[torch.from_numpy(rows)] = iou[torch.from_numpy(rows), torch.from_numpy(cols)]
            torch.testing.assert_close(res.max_overlaps.double(), overlaps, **TOL)
            assert torch.equal(res.labels[torch.from_numpy(rows)], gt_labels[b][torch.from_numpy(cols)])
        if b == 0:
            assert (iou > 0.1).sum() >= 3  # the matching is decided partly by real overlaps


def test_losses_equal_original():
    head = _head()
    preds, gt_boxes, gt_labels = _scene(head)
    ours = head.loss(preds, gt_boxes, gt_labels)
    ref, _, assigned = _ref_loss(head.cfg, preds, gt_boxes, gt_labels)
    assert set(ours) == set(ref) == {"loss_heatmap", "layer_0_loss_cls", "layer_0_loss_bbox", "layer_-1_loss_cls",
                                     "layer_-1_loss_bbox", "matched_ious"}
    assert (assigned > 0).sum() == 2 * (5 + 3)  # every GT matched once per layer
    for key in ref:
        torch.testing.assert_close(ours[key].double(), ref[key].double(), **TOL, msg=key)
    assert ref["matched_ious"] > 0.1


def test_encode_targets_equal_original():
    """Our centre-z boxes give the original's targets for the same boxes stored with bottom z."""
    head = _head()
    boxes = _boxes(15, torch.Generator().manual_seed(7))
    bottom = boxes.clone()
    bottom[:, 2] -= bottom[:, 5] / 2
    torch.testing.assert_close(head.bbox_coder.encode(boxes), _ref_encode(head.cfg, bottom), **TOL)


def test_get_bboxes_equals_original_decode():
    head = _head()
    preds, _, _ = _scene(head)
    P = head.num_proposals
    with torch.no_grad():
        preds["center"] = preds["center"] * 1.3 - 5  # push some centres out of the post-centre range
        # heights at the range's top z (10): a box whose centre is above it but whose bottom is not stays
        dim_h = preds["dim"][:, 2, -P:].exp()
        preds["height"][:, 0, -P:8 - P] = 10.0 + dim_h[:, :8] * torch.tensor([0.25, 0.75] * 4)
        preds["query_heatmap_score"][:, 8:12] = 0.0  # queries on suppressed cells: score exactly 0
        ours = head.get_bboxes(preds)
    one_hot = F.one_hot(preds["query_labels"], 10).permute(0, 2, 1)
    score = preds["heatmap"][..., -P:].sigmoid() * preds["query_heatmap_score"] * one_hot
    boxes, scores, labels = _ref_decode(head.cfg, score, *(preds[k][..., -P:] for k in ("rot", "dim", "center",
                                                                                          "height", "vel")))
    # the original tests its (bottom-z) boxes against the range, and skips `score > threshold` when the
    # threshold is 0.0 (falsy): zero-score queries stay
    assert head.cfg.score_threshold == 0.0 and (scores == 0).any()
    r = torch.tensor(head.cfg.post_center_range)
    keep = (boxes[..., :3] >= r[:3]).all(2) & (boxes[..., :3] <= r[3:]).all(2)
    assert 0 < keep.sum() < keep.numel()
    assert keep[:, :8].any() and not keep[:, :8].all()  # the z edge decides some of the first 8
    assert (scores[keep] == 0).any()
    for b in range(2):
        expect = boxes[b, keep[b]].clone()
        expect[:, 2] += expect[:, 5] / 2  # documented: our z is the box centre
        torch.testing.assert_close(ours[b]["boxes_3d"], expect, **TOL)
        torch.testing.assert_close(ours[b]["scores_3d"], scores[b, keep[b]], **TOL)
        assert torch.equal(ours[b]["labels_3d"], labels[b, keep[b]])
        # a zero-score query's label is the argmax of zeros (0) in both; the others keep their query's class
        scored = scores[b, keep[b]] > 0
        assert torch.equal(ours[b]["labels_3d"][scored], preds["query_labels"][b][keep[b]][scored])


def test_loss_functions_equal_original_formulas():
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(40, 10, generator=gen) * 2
    labels = torch.randint(0, 11, (40,), generator=gen)
    weights = torch.rand(40, generator=gen)
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, weights, avg_factor=7.0),
                               _ref_sigmoid_focal(logits, labels, weights, 7.0), **TOL)
    pred = torch.rand(2, 10, 8, 8, generator=gen).clamp(1e-4, 1 - 1e-4)
    target = torch.rand(2, 10, 8, 8, generator=gen) ** 4
    target[0, 1, 2, 3] = target[1, 5, 6, 7] = 1.0
    torch.testing.assert_close(gaussian_focal_loss(pred, target, avg_factor=2.0),
                               _ref_gaussian_focal(pred, target, 2.0), **TOL)


# ------------------------------------------------------------------------------------------- installed oracles


def _require(mod: str):
    try:
        return importlib.import_module(mod)
    except Exception as exc:  # ImportError, or mmcv's version/ops checks
        pytest.skip(f"{mod} unavailable ({type(exc).__name__}: {exc}); run `bash tests/setup_extras.sh` to build "
                    "mmcv 2.1.0 with CPU ops and install mmdet/mmdet3d")


@pytest.mark.mmdet
def test_losses_equal_mmdet():
    losses = _require("mmdet.models.losses")
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(40, 10, generator=gen) * 2
    labels = torch.randint(0, 11, (40,), generator=gen)
    weights = torch.rand(40, generator=gen)
    focal = losses.FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, reduction="mean", loss_weight=1.0)
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, weights, avg_factor=7.0),
                               focal(logits, labels, weights, avg_factor=7.0), **TOL)
    pred = torch.rand(2, 10, 8, 8, generator=gen).clamp(1e-4, 1 - 1e-4)
    target = torch.rand(2, 10, 8, 8, generator=gen) ** 4
    target[0, 1, 2, 3] = 1.0
    gfl = losses.GaussianFocalLoss(reduction="mean", loss_weight=1.0)
    torch.testing.assert_close(gaussian_focal_loss(pred, target, avg_factor=3.0), gfl(pred, target, avg_factor=3.0),
                               **TOL)
    box_pred, box_target = torch.randn(30, 10, generator=gen), torch.randn(30, 10, generator=gen)
    box_w = (torch.rand(30, 1, generator=gen) > 0.5).float() * torch.tensor([1.0] * 8 + [0.2] * 2)
    l1 = losses.L1Loss(reduction="mean", loss_weight=0.25)
    torch.testing.assert_close(weighted_l1_loss(box_pred, box_target, box_w, avg_factor=5.0, weight=0.25),
                               l1(box_pred, box_target, box_w, avg_factor=5.0), **TOL)


@pytest.mark.mmdet
def test_focal_match_cost_equals_mmdet():
    costs = _require("mmdet.models.task_modules.assigners.match_cost")
    gen = torch.Generator().manual_seed(10)
    logits = torch.randn(20, 10, generator=gen) * 3
    gt_labels = torch.randint(0, 10, (6,), generator=gen)
    theirs = costs.FocalLossCost(weight=0.15, alpha=0.25, gamma=2.0)._focal_loss_cost(logits, gt_labels)
    torch.testing.assert_close(FocalLossCost(0.15, 0.25, 2.0)(logits, gt_labels), theirs, **TOL)


@pytest.mark.mmdet
def test_heatmap_utilities_equal_mmdet3d():
    """mmdet3d's gaussian_radius / draw_heatmap_gaussian (the functions the original calls) in the original's loop."""
    gauss = _require("mmdet3d.models.utils.gaussian")
    head = _head()
    cfg = head.cfg
    gen = torch.Generator().manual_seed(11)
    boxes = torch.cat([_boxes(30, gen), _boxes(10, gen, inside=False)])
    labels = torch.randint(0, 10, (len(boxes),), generator=gen)
    theirs = torch.zeros(10, 32, 32)
    for box, label in zip(boxes, labels):
        width, length = box[3] / 0.5 / 2, box[4] / 0.5 / 2
        radius = max(cfg.min_radius, int(gauss.gaussian_radius((length, width), min_overlap=cfg.gaussian_overlap)))
        centre = torch.tensor([(box[0] + 16) / 0.5 / 2, (box[1] + 16) / 0.5 / 2]).to(torch.int32)
        gauss.draw_heatmap_gaussian(theirs[label], centre[[1, 0]], radius)
    torch.testing.assert_close(head._heatmap_target(boxes, labels, torch.device("cpu")), theirs, **TOL)
    r = gaussian_radius(boxes[:, 4], boxes[:, 3], 0.1)
    ref = torch.stack([torch.as_tensor(gauss.gaussian_radius((h, w), min_overlap=0.1)) for h, w in boxes[:, 3:5]])
    torch.testing.assert_close(r, ref.float(), **TOL)
    # the vectorised drawing itself, on a bare map
    ours = gaussian_heatmap((1, 32, 32), torch.tensor([0]), torch.tensor([3]), torch.tensor([30]), torch.tensor([4]))
    bare = torch.zeros(32, 32)
    gauss.draw_heatmap_gaussian(bare, torch.tensor([30, 3], dtype=torch.int32), 4)
    torch.testing.assert_close(ours[0], bare, **TOL)


@pytest.mark.mmdet
def test_iou_equals_mmdet3d_lidar_boxes():
    """mmdet3d 1.x LiDARInstance3DBoxes.overlaps (bottom z, yaw from +x towards +y) on the assigner's IoU input."""
    structures = _require("mmdet3d.structures")
    from model.heads.iou3d import box_iou_3d

    gen = torch.Generator().manual_seed(12)
    a, b = _boxes(12, gen), _boxes(9, gen)
    b[:4, :7] = a[:4, :7] + torch.randn(4, 7, generator=gen) * 0.2
    bottom = lambda t: torch.cat([t[:, :2], t[:, 2:3] - t[:, 5:6] / 2, t[:, 3:7]], 1)  # noqa: E731
    try:
        theirs = structures.LiDARInstance3DBoxes.overlaps(structures.LiDARInstance3DBoxes(bottom(a)),
                                                          structures.LiDARInstance3DBoxes(bottom(b)))
    except (RuntimeError, NotImplementedError, AssertionError) as exc:  # mmcv's rotated-overlap op without CPU code
        pytest.skip(f"mmcv's boxes_overlap_bev has no CPU implementation here ({exc})")
    ours = box_iou_3d(a, b)
    assert (theirs > 0.3).sum() >= 3
    torch.testing.assert_close(ours, theirs.to(ours.dtype), **TOL)
