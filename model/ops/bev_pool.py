"""BEV pooling: sum camera-frustum features into BEV cells, in pure torch.

The original (`mmdet3d/ops/bev_pool`) sorts points by cell and lets one CUDA thread reduce each run of equal cells
("interval reduction"). Sorting is only needed because that kernel avoids atomics; `index_add_` is a scatter-add
that PyTorch runs with atomics on GPU and as one linear pass on CPU, so we skip the sort entirely:

    cell = flat (b, z, x, y) index of every point; points outside the grid go to one extra dump row
    out[cell] += feats   (forward)          grad_feats = grad_out[cell]   (backward)

Sending out-of-grid points to a dump row instead of masking them avoids copying the (large) feature tensor.
The autograd function keeps only the int64 cell index for backward, not the features.
"""

from __future__ import annotations

import torch


def cell_index(geom: torch.Tensor, bx: torch.Tensor, dx: torch.Tensor, nx: torch.Tensor) -> torch.Tensor:
    """Flat index (b, z, x, y) of each point's BEV cell, or B*Z*X*Y (the dump row) when outside the grid.

    geom: [B, ..., 3] xyz in the LiDAR frame; bx: centre of the first cell; dx: cell size; nx: cells per axis.
    Quantisation truncates toward zero like the original `.long()`, so points within one cell below the lower
    bound land in cell 0 exactly as they do there.
    """
    B = geom.shape[0]
    X, Y, Z = (int(v) for v in nx.tolist())
    g = ((geom.reshape(B, -1, 3) - (bx - dx / 2.0)) / dx).long()
    gx, gy, gz = g.unbind(-1)
    inside = (gx >= 0) & (gx < X) & (gy >= 0) & (gy < Y) & (gz >= 0) & (gz < Z)
    b = torch.arange(B, device=geom.device).view(B, 1)
    idx = ((b * Z + gz) * X + gx) * Y + gy
    return torch.where(inside, idx, torch.full_like(idx, B * X * Y * Z)).reshape(-1)


class _ScatterSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: torch.Tensor, idx: torch.Tensor, n_cells: int):
        out = feats.new_zeros(n_cells + 1, feats.shape[1])
        out.index_add_(0, idx, feats)
        ctx.save_for_backward(idx)
        return out[:n_cells]

    @staticmethod
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        grad = torch.cat([grad_out, grad_out.new_zeros(1, grad_out.shape[1])]) if ctx.needs_input_grad[0] else None
        return (grad.index_select(0, idx) if grad is not None else None), None, None


def bev_pool(feats: torch.Tensor, geom: torch.Tensor, bx: torch.Tensor, dx: torch.Tensor,
             nx: torch.Tensor) -> torch.Tensor:
    """feats [B, ..., C] with geom [B, ..., 3] (same leading dims) -> BEV [B, C*Z, X, Y] (Z folded into channels,
    z-major like the original's `cat(x.unbind(dim=2), 1)`)."""
    B, C = feats.shape[0], feats.shape[-1]
    X, Y, Z = (int(v) for v in nx.tolist())
    idx = cell_index(geom, bx, dx, nx)
    out = _ScatterSum.apply(feats.reshape(-1, C), idx, B * Z * X * Y)
    out = out.view(B, Z, X, Y, C).permute(0, 1, 4, 2, 3)  # B, Z, C, X, Y
    return out.reshape(B, Z * C, X, Y)


def bev_pool_reference(feats: torch.Tensor, geom: torch.Tensor, bx, dx, nx) -> torch.Tensor:
    """Sort-based reference following the original's steps (quantise, drop, rank, sum intervals), summing in float64.
    Cells are quantised in the input dtype, as the original does, so cell membership matches exactly."""
    B, C = feats.shape[0], feats.shape[-1]
    X, Y, Z = (int(v) for v in nx.tolist())
    f = feats.reshape(B, -1, C).double()
    g = ((geom.reshape(B, -1, 3) - (bx - dx / 2.0)) / dx).long()
    out = torch.zeros(B, C, Z, X, Y, dtype=torch.float64)
    for b in range(B):
        gb, fb = g[b], f[b]
        keep = (gb[:, 0] >= 0) & (gb[:, 0] < X) & (gb[:, 1] >= 0) & (gb[:, 1] < Y) & (gb[:, 2] >= 0) & (gb[:, 2] < Z)
        gb, fb = gb[keep], fb[keep]
        rank = (gb[:, 2] * X + gb[:, 0]) * Y + gb[:, 1]
        order = rank.argsort()
        rank, fb = rank[order], fb[order]
        uniq, counts = torch.unique_consecutive(rank, return_counts=True)
        sums = torch.stack([seg.sum(0) for seg in fb.split(counts.tolist())]) if len(uniq) else fb[:0]
        out[b].view(C, -1)[:, uniq] = sums.T
    return torch.cat(out.unbind(dim=2), 1)
