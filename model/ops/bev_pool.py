"""BEV pooling: sum camera-frustum features into BEV cells, in pure torch.

The original (`mmdet3d/ops/bev_pool`) sorts points by cell and lets one CUDA thread reduce each run of equal cells
("interval reduction"). We keep the idea where it pays and drop it where it does not:

    cell = flat (b, z, x, y) index of every point; points outside the grid go to one extra dump cell
    CUDA: out[cell] += feats with `index_add_` (atomics; no sort needed)
    CPU:  argsort the int32 cells, then `embedding_bag(mode="sum")` reduces each run of equal cells; PyTorch's CPU
          embedding_bag is a vectorised, multi-threaded segment sum, about 2x faster than `index_add_`, whose CPU
          kernel dispatches one small add per point. The dump cell sorts last and is simply not a bag.
    backward: grad_feats = grad_out[cell] (a gather; no sort)

The autograd functions keep only the int cell index for backward, never the features.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def cell_index(geom: torch.Tensor, bx: torch.Tensor, dx: torch.Tensor, nx: torch.Tensor,
               dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Flat index (b, z, x, y) of each point's BEV cell, or B*Z*X*Y (the dump cell) when outside the grid.

    geom: [B, ..., 3] xyz in the LiDAR frame; bx: centre of the first cell; dx: cell size; nx: cells per axis.
    Quantisation truncates toward zero like the original `.long()`, so points within one cell below the lower
    bound land in cell 0 exactly as they do there: trunc(u) >= 0 <=> u > -1, and trunc(u) < n <=> u < n.
    The flat index is computed in float from the truncated coordinates (exact: integers below 2^24, else float64),
    in place where possible; elementwise rather than a matmul so that TF32 matmuls on GPUs cannot round it. Float
    steps run 3x faster than the same steps in int64, and stay defined for NaN or huge coordinates.
    """
    B = geom.shape[0]
    X, Y, Z = (int(v) for v in nx.tolist())
    dump = B * X * Y * Z
    exact = torch.float32 if dump < 2 ** 24 else torch.float64
    # the dtype `geom - bx` would have (a half-precision geom is quantised in bx's precision), and bx's values as
    # scalars of that dtype: the same arithmetic as with tensor operands
    g = geom.reshape(B, -1, 3).to(torch.promote_types(geom.dtype, bx.dtype))
    low, size = (bx - dx / 2.0).tolist(), dx.tolist()
    idx = inside = None
    # one contiguous column at a time (strided [N, 3] views vectorise poorly): 1.6x faster than whole-tensor steps
    for u, lo, d, n, stride in zip(g.unbind(-1), low, size, (X, Y, Z), (Y, 1, X * Y)):
        u = torch.sub(u, lo).div_(d)
        ok = u > -1
        ok &= u < n
        inside = ok if inside is None else inside.logical_and_(ok)
        if n == 1:  # the only cell along this axis: every inside point has coordinate 0
            continue
        u = u.trunc_().to(exact)
        if idx is None:
            idx = u.mul_(stride) if stride != 1 else u
        else:
            idx.add_(u, alpha=stride)
    if idx is None:  # a 1 x 1 x 1 grid
        idx = torch.zeros(inside.shape, dtype=exact, device=geom.device)
    if B > 1:
        idx += (torch.arange(B, dtype=exact, device=geom.device) * (X * Y * Z)).view(B, 1)
    idx.masked_fill_(~inside, dump)
    return idx.to(dtype).reshape(-1)


def _segment_offsets(idx: torch.Tensor, n_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The points inside the grid in cell order, and where each cell's run starts (n_cells + 1 entries)."""
    order = torch.argsort(idx)
    offsets = idx.new_zeros(n_cells + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(idx, minlength=n_cells + 1)[:n_cells], 0, out=offsets[1:])
    # the dump cell's points sort last; drop them rather than rely on include_last_offset to ignore them (torch
    # 2.13's float64 embedding_bag adds them to the last bag, float32 does not)
    return order[:int(offsets[-1])], offsets


def _sorted_pool(order, offsets, table, weights=None):
    return F.embedding_bag(order, table, offsets, mode="sum", per_sample_weights=weights, include_last_offset=True)


def _cpu_fast(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


class _ScatterSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: torch.Tensor, idx: torch.Tensor, n_cells: int):
        ctx.save_for_backward(idx)
        if _cpu_fast(feats):
            return _sorted_pool(*_segment_offsets(idx, n_cells), feats)
        out = feats.new_zeros(n_cells + 1, feats.shape[1])
        out.index_add_(0, idx, feats)
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
    idx = cell_index(geom, bx, dx, nx, torch.int32 if B * Z * X * Y < 2 ** 31 - 1 else torch.int64)
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


def _csr(crow, idx_rows, values, n_cols):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta": we test what we use
        return torch.sparse_csr_tensor(crow, idx_rows.reshape(-1), values.reshape(-1),
                                       size=(values.shape[0], n_cols), check_invariants=False)


class _LiftSplat(torch.autograd.Function):
    """out[cell] = sum over frustum points p of depth[p] * context[pixel(p)], without building the frustum features.

    The (pixel -> cell) association with depth-probability weights is a sparse matrix A^T [pixels, cells] whose rows
    are the D depth bins of a pixel (CSR with a fixed row pointer). Forward is context^T @ A^T; backward is
    A^T @ grad (context) and grad . context sampled at A's pattern (depth). On CPU the forward is instead a
    depth-weighted embedding_bag over the points sorted by cell (4x faster than the CSR product there). Neither
    materialises the [B, N, D, fH, fW, C] tensor (637 MB per sample at full size) nor its gradient.
    """

    @staticmethod
    def forward(ctx, depth_rows: torch.Tensor, context_rows: torch.Tensor, idx_rows: torch.Tensor, n_cells: int):
        P, D = depth_rows.shape
        crow = torch.arange(0, P * D + 1, D, device=depth_rows.device)
        ctx.save_for_backward(crow, idx_rows, depth_rows, context_rows)
        if _cpu_fast(context_rows):
            # each frustum point looks up its pixel's context row, weighted by its depth probability
            small = torch.int32 if n_cells < 2 ** 31 - 1 else torch.int64  # int32 keys sort 2x faster
            order, offsets = _segment_offsets(idx_rows.reshape(-1).to(small), n_cells)
            pixel = torch.div(order, D, rounding_mode="floor")
            return _sorted_pool(pixel, offsets, context_rows, depth_rows.reshape(-1)[order]).t()
        At = _csr(crow, idx_rows, depth_rows, n_cells + 1)
        return torch.mm(context_rows.t(), At)[:, :n_cells]  # C, n_cells

    @staticmethod
    def backward(ctx, grad_t):
        crow, idx_rows, depth_rows, context_rows = ctx.saved_tensors
        P, D = depth_rows.shape
        g = torch.cat([grad_t, grad_t.new_zeros(grad_t.shape[0], 1)], 1)  # C, n_cells + 1 (dump column: 0)
        grad_depth = grad_ctx = None
        if ctx.needs_input_grad[1] and _cpu_fast(g):
            # a pixel's D points are one bag in natural order: no sort needed (3x faster than the CSR product)
            grad_ctx = _sorted_pool(idx_rows.reshape(-1), crow, g.t().contiguous(), depth_rows.reshape(-1))
        elif ctx.needs_input_grad[1]:
            At = _csr(crow, idx_rows, depth_rows, g.shape[1])
            grad_ctx = torch.mm(At, g.t().contiguous())
        if ctx.needs_input_grad[0]:
            pattern = _csr(crow, idx_rows, torch.zeros_like(depth_rows), g.shape[1])
            sampled = torch.sparse.sampled_addmm(pattern, context_rows, g, beta=0.0)
            grad_depth = sampled.values().view(P, D)
        return grad_depth, grad_ctx, None, None


def bev_pool_lift(depth: torch.Tensor, context: torch.Tensor, geom: torch.Tensor, bx: torch.Tensor,
                  dx: torch.Tensor, nx: torch.Tensor) -> torch.Tensor:
    """Fused lift + splat: depth [B, N, D, fH, fW] (probabilities), context [B, N, C, fH, fW], geom
    [B, N, D, fH, fW, 3] -> [B, C*Z, X, Y]; equal to `bev_pool(depth x context, geom)`."""
    B, N, D, fH, fW = depth.shape
    C = context.shape[2]
    X, Y, Z = (int(v) for v in nx.tolist())
    n_cells = B * Z * X * Y
    idx = cell_index(geom, bx, dx, nx).view(B, N, D, fH, fW)
    # rows = pixels (b, n, h, w); the D depth bins of a pixel are one CSR row
    idx_rows = idx.permute(0, 1, 3, 4, 2).reshape(-1, D)
    # fp32 like the original's force_fp32 bev_pool (sums over many points; sparse kernels lack half support)
    depth_rows = depth.float().permute(0, 1, 3, 4, 2).reshape(-1, D)
    context_rows = context.float().permute(0, 1, 3, 4, 2).reshape(-1, C)
    out_t = _LiftSplat.apply(depth_rows, context_rows, idx_rows, n_cells)  # C, B*Z*X*Y
    return out_t.reshape(C, B, Z, X, Y).permute(1, 2, 0, 3, 4).reshape(B, Z * C, X, Y)
