"""Hard voxelization in pure torch, matching BEVFusion's `Voxelization` op (xyz coordinate order).

Semantics of the original CUDA op that we keep: voxel coords are `floor((p - min) / size)`, points outside the grid
are dropped; voxels are numbered in order of their first point; the first `max_points` points of a voxel (in point
order) are kept; voxels beyond `max_voxels` are dropped (so callers shuffle points first). The original does this with
a quadratic per-point scan; here one sort by voxel key gives every point its slot.
"""

from __future__ import annotations

import torch
from torch import nn


def hard_voxelize(points: torch.Tensor, voxel_size, point_cloud_range, max_points: int, max_voxels: int):
    """points [P, F] -> voxels [M, max_points, F] (zero padded), coords [M, 3] int32 (x, y, z), num_points [M]."""
    device = points.device
    vs = torch.tensor(voxel_size, dtype=points.dtype, device=device)
    lo = torch.tensor(point_cloud_range[:3], dtype=points.dtype, device=device)
    hi = torch.tensor(point_cloud_range[3:], dtype=points.dtype, device=device)
    grid = torch.round((hi - lo) / vs).long()
    X, Y, Z = (int(v) for v in grid.tolist())
    c = torch.floor((points[:, :3] - lo) / vs).long()
    valid = ((c >= 0) & (c < grid)).all(1)
    pidx = valid.nonzero(as_tuple=True)[0]
    c = c[pidx]
    key = (c[:, 0] * Y + c[:, 1]) * Z + c[:, 2]
    F_ = points.shape[1]
    if key.numel() == 0:
        return (points.new_zeros(0, max_points, F_), torch.zeros(0, 3, dtype=torch.int32, device=device),
                torch.zeros(0, dtype=torch.int32, device=device))
    # stable sort keeps point order inside each voxel, which decides both slot and voxel numbering
    key_sorted, order = torch.sort(key, stable=True)
    new = torch.ones_like(key_sorted, dtype=torch.bool)
    new[1:] = key_sorted[1:] != key_sorted[:-1]
    group = torch.cumsum(new.long(), 0) - 1
    starts = new.nonzero(as_tuple=True)[0]
    slot = torch.arange(len(key_sorted), device=device) - starts[group]
    first_point = order[starts]  # index (into pidx) of each voxel's first point
    voxel_rank = torch.empty_like(first_point)
    voxel_rank[torch.argsort(first_point)] = torch.arange(len(first_point), device=device)
    vid = voxel_rank[group]
    keep = (slot < max_points) & (vid < max_voxels)
    M = min(len(first_point), max_voxels)
    voxels = points.new_zeros(M, max_points, F_)
    src = pidx[order[keep]]
    voxels[vid[keep], slot[keep]] = points[src]
    coords = torch.empty(M, 3, dtype=torch.int32, device=device)
    num = torch.zeros(M, dtype=torch.int32, device=device)
    sel = voxel_rank < max_voxels
    coords[voxel_rank[sel]] = c[first_point[sel]].int()
    num.index_add_(0, vid[keep], torch.ones_like(vid[keep], dtype=torch.int32))
    return voxels, coords, num


class Voxelization(nn.Module):
    """`encoders.lidar.voxelize`: per-sample hard voxelization, mean of each voxel's points, batch index prepended.

    Returns features [M, F], coords [M, 4] int32 as (batch, x, y, z), batch size.
    """

    def __init__(self, voxel_size, point_cloud_range, max_num_points=10, max_voxels=(120000, 160000), reduce=True):
        super().__init__()
        self.voxel_size = tuple(voxel_size)
        self.point_cloud_range = tuple(point_cloud_range)
        self.max_num_points = max_num_points
        self.max_voxels = tuple(max_voxels)
        self.reduce = reduce

    @torch.no_grad()
    def forward(self, points: list[torch.Tensor]):
        max_voxels = self.max_voxels[0] if self.training else self.max_voxels[1]
        feats, coords = [], []
        for b, p in enumerate(points):
            v, c, n = hard_voxelize(p, self.voxel_size, self.point_cloud_range, self.max_num_points, max_voxels)
            if self.reduce:
                v = v.sum(1) / n.clamp(min=1).type_as(v).view(-1, 1)
            feats.append(v)
            coords.append(torch.nn.functional.pad(c, (1, 0), value=b))
        return torch.cat(feats), torch.cat(coords), len(points)

    def extra_repr(self):
        return f"voxel_size={self.voxel_size}, max_num_points={self.max_num_points}, max_voxels={self.max_voxels}"
