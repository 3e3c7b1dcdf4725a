"""Rotated 3D box overlaps in plain, vectorised torch (no CUDA op needed).

Boxes use the batch layout `(x, y, z centre, l, w, h, yaw, ...)`: `l` lies along the heading `yaw` (radians,
counter-clockwise from +x), `w` across it. Only the first 7 columns are read.

The BEV overlap of every box pair is the area of the intersection of two convex quadrilaterals. Instead of
clipping polygons (branchy, per pair), each pair collects the 24 candidate vertices of the intersection polygon
(corners of one box inside the other: 4 + 4; edge/edge crossings: 16), orders the valid ones by angle around
their mean and applies the shoelace formula. Everything is fixed-size so it broadcasts over N x M pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Tolerance (metres) for "corner on the other box's boundary" and for edge parameters at segment ends; large
# enough to keep touching/coincident boxes' shared corners, far below any box size that matters.
_EPS = 1e-5


def box_corners_bev(boxes: Tensor) -> Tensor:
    """[..., 7+] boxes -> [..., 4, 2] BEV corners in counter-clockwise order."""
    x, y, l, w, yaw = boxes[..., 0], boxes[..., 1], boxes[..., 3], boxes[..., 4], boxes[..., 6]
    # Unit-square corners scaled by (l, w), counter-clockwise, then rotated by yaw.
    sx = boxes.new_tensor([0.5, -0.5, -0.5, 0.5])
    sy = boxes.new_tensor([0.5, 0.5, -0.5, -0.5])
    dx = sx * l[..., None]
    dy = sy * w[..., None]
    c, s = torch.cos(yaw)[..., None], torch.sin(yaw)[..., None]
    cx = x[..., None] + dx * c - dy * s
    cy = y[..., None] + dx * s + dy * c
    return torch.stack([cx, cy], dim=-1)


def _inside(points: Tensor, boxes: Tensor) -> Tensor:
    """points [N, M, K, 2] tested against boxes [N or 1, M or 1, 7+] -> bool [N, M, K] (boundary counts)."""
    d = points - boxes[..., None, :2]
    c, s = torch.cos(boxes[..., 6])[..., None], torch.sin(boxes[..., 6])[..., None]
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    return (along.abs() <= boxes[..., 3, None] * 0.5 + _EPS) & (across.abs() <= boxes[..., 4, None] * 0.5 + _EPS)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def bev_overlap(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise BEV intersection area of rotated boxes: [N, 7+] x [M, 7+] -> [N, M] (computed in float32+)."""
    dtype = torch.promote_types(boxes1.dtype, torch.float32)
    b1, b2 = boxes1[:, :7].to(dtype), boxes2[:, :7].to(dtype)
    n, m = b1.shape[0], b2.shape[0]
    if n == 0 or m == 0:
        return b1.new_zeros((n, m))
    # Work relative to each pair's first box centre: keeps coordinates small (float32 precision at 50 m).
    origin = b1[:, None, :2]  # [N, 1, 2]
    c1 = box_corners_bev(b1)[:, None] - origin[..., None, :]  # [N, 1, 4, 2]
    c2 = box_corners_bev(b2)[None] - origin[..., None, :]  # [N, M, 4, 2]
    c1 = c1.expand(n, m, 4, 2)
    rel1 = b1[:, None].expand(n, m, 7).clone()
    rel1[..., :2] = 0
    rel2 = b2[None].expand(n, m, 7).clone()
    rel2[..., :2] = rel2[..., :2] - origin

    in1 = _inside(c1, rel2)  # corners of box 1 inside box 2
    in2 = _inside(c2, rel1)

    # Edge i of box 1 (p -> p + r) against edge j of box 2 (q -> q + s).
    p = c1[..., :, None, :]
    r = (c1.roll(-1, dims=-2) - c1)[..., :, None, :]
    q = c2[..., None, :, :]
    s = (c2.roll(-1, dims=-2) - c2)[..., None, :, :]
    denom = _cross(r, s)  # [N, M, 4, 4]
    qp = q - p
    parallel = denom.abs() < 1e-12
    safe = torch.where(parallel, torch.ones_like(denom), denom)
    t = _cross(qp, s) / safe
    u = _cross(qp, r) / safe
    lo, hi = -1e-7, 1 + 1e-7
    hit = ~parallel & (t >= lo) & (t <= hi) & (u >= lo) & (u <= hi)
    cross_pts = (p + t[..., None] * r).reshape(n, m, 16, 2)

    pts = torch.cat([c1, c2, cross_pts], dim=-2)  # [N, M, 24, 2]
    valid = torch.cat([in1, in2, hit.reshape(n, m, 16)], dim=-1)
    count = valid.sum(-1)
    vf = valid.to(dtype)[..., None]
    centre = (pts * vf).sum(-2) / count.clamp(min=1)[..., None].to(dtype)
    rel = pts - centre[..., None, :]
    angle = torch.atan2(rel[..., 1], rel[..., 0])
    # Invalid candidates sort last and are replaced by the first valid vertex, so their shoelace terms vanish.
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))
    order = angle.argsort(dim=-1)
    rel = rel.gather(-2, order[..., None].expand(-1, -1, -1, 2))
    valid_sorted = valid.gather(-1, order)
    rel = torch.where(valid_sorted[..., None], rel, rel[..., :1, :].expand_as(rel))
    area = 0.5 * _cross(rel, rel.roll(-1, dims=-2)).sum(-1)
    return torch.where(count >= 3, area.abs(), torch.zeros_like(area))


def box_iou_3d(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-8) -> Tensor:
    """Pairwise 3D IoU of rotated boxes (z = box centre): [N, 7+] x [M, 7+] -> [N, M] float32+.

    Like mmdet3d's `BboxOverlaps3D(coordinate='lidar')`: BEV overlap x height overlap over the union volume.
    """
    dtype = torch.promote_types(boxes1.dtype, torch.float32)
    b1, b2 = boxes1.to(dtype), boxes2.to(dtype)
    inter_bev = bev_overlap(b1, b2)
    top = torch.minimum((b1[:, 2] + b1[:, 5] * 0.5)[:, None], (b2[:, 2] + b2[:, 5] * 0.5)[None])
    bottom = torch.maximum((b1[:, 2] - b1[:, 5] * 0.5)[:, None], (b2[:, 2] - b2[:, 5] * 0.5)[None])
    inter = inter_bev * (top - bottom).clamp(min=0)
    vol1 = (b1[:, 3] * b1[:, 4] * b1[:, 5])[:, None]
    vol2 = (b2[:, 3] * b2[:, 4] * b2[:, 5])[None]
    return inter / (vol1 + vol2 - inter).clamp(min=eps)


def box_iou_bev(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-8) -> Tensor:
    """Pairwise BEV IoU of rotated boxes: [N, 7+] x [M, 7+] -> [N, M]."""
    dtype = torch.promote_types(boxes1.dtype, torch.float32)
    b1, b2 = boxes1.to(dtype), boxes2.to(dtype)
    inter = bev_overlap(b1, b2)
    a1 = (b1[:, 3] * b1[:, 4])[:, None]
    a2 = (b2[:, 3] * b2[:, 4])[None]
    return inter / (a1 + a2 - inter).clamp(min=eps)
