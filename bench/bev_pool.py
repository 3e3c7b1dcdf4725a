"""BEV pooling at the full detection geometry: our `bev_pool` vs LSS's cumsum trick vs a bare `index_add_` scatter.

One sample, 6 cameras x 118 depth bins x 32 x 88 frustum points (1.99 M) x 80 channels -> 360 x 360 cells (0.3 m),
geometry from a 6-camera ring through `DepthLSSTransform.get_geometry`. All three produce the same [1, 80, 360, 360]
map (checked). Timed in the same run, median of repeats:

- ours: geometry -> cell index (quantise, range check, flatten) + scatter-add (forward; and forward + backward)
- cumsum: LSS's "QuickCumsum": quantise, drop out-of-range, rank, argsort, reorder, cumsum, take interval ends, diff
- bare scatter: `index_add_` of the same points with cell indices precomputed (no geometry work) -- the floor
- fused (what the model runs): `bev_pool_lift` from depth probabilities and context features, a sparse
  (pixel x depth -> cell) matrix product that never builds the 1.99 M x 80 frustum features; compared with
  building them (depth x context) then pooling, forward and forward + backward

Goals: ours >= 20x faster than cumsum; ours within 2x of the bare scatter although it includes the geometry step.
Usage: python bench/bev_pool.py [--repeat N] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import model  # noqa: E402,F401
from model.camera.vtransform import DepthLSSTransform  # noqa: E402
from model.ops.bev_pool import bev_pool, bev_pool_lift, cell_index  # noqa: E402


def ring_rig(n=6, H=256, W=704):
    K = torch.eye(4)
    K[0, 0] = K[1, 1] = 1260.0 * 0.48  # nuScenes focal length after the 0.48 test-time resize
    K[0, 2], K[1, 2] = W / 2, H / 2
    c2l = []
    for i in range(n):
        a = 2 * math.pi * i / n
        T = torch.eye(4)
        T[:3, :3] = torch.stack([torch.tensor([math.sin(a), -math.cos(a), 0.0]), torch.tensor([0.0, 0.0, -1.0]),
                                 torch.tensor([math.cos(a), math.sin(a), 0.0])], dim=1)
        T[:3, 3] = torch.tensor([math.cos(a), math.sin(a), 1.6])
        c2l.append(T)
    return K.expand(1, n, 4, 4).clone(), torch.stack(c2l)[None]


def cumsum_pool(feats, geom, bx, dx, nx):
    """LSS (Philion & Fidler) cumsum trick, as BEVFusion's unused `QuickCumsum` forward."""
    B, C = feats.shape[0], feats.shape[-1]
    X, Y, Z = (int(v) for v in nx.tolist())
    x = feats.reshape(-1, C)
    g = ((geom.reshape(-1, 3) - (bx - dx / 2.0)) / dx).long()
    b = torch.arange(B).repeat_interleave(x.shape[0] // B)
    kept = (g[:, 0] >= 0) & (g[:, 0] < X) & (g[:, 1] >= 0) & (g[:, 1] < Y) & (g[:, 2] >= 0) & (g[:, 2] < Z)
    x, g, b = x[kept], g[kept], b[kept]
    ranks = ((b * Z + g[:, 2]) * X + g[:, 0]) * Y + g[:, 1]
    order = ranks.argsort()
    x, ranks = x[order], ranks[order]
    x = x.cumsum(0)
    last = torch.ones(x.shape[0], dtype=torch.bool)
    last[:-1] = ranks[1:] != ranks[:-1]
    x, ranks = x[last], ranks[last]
    x = torch.cat((x[:1], x[1:] - x[:-1]))
    out = torch.zeros(B * Z * X * Y, C)
    out[ranks] = x
    return out.view(B, Z, X, Y, C).permute(0, 1, 4, 2, 3).reshape(B, Z * C, X, Y)


def timed(fn, repeat):
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vt = DepthLSSTransform(256, 80, (256, 704), (32, 88), (-54, 54, 0.3), (-54, 54, 0.3), (-10, 10, 20), (1, 60, 0.5), 2)
    K, c2l = ring_rig()
    eye = torch.eye(4)
    with torch.no_grad():
        geom = vt.get_geometry(c2l, K, eye.expand(1, 6, 4, 4), eye.expand(1, 4, 4)).contiguous()
    feats = torch.rand(1, 6, 118, 32, 88, 80)
    bx, dx, nx = vt.bx.data, vt.dx.data, vt.nx.data
    n_pts = geom.numel() // 3
    idx = cell_index(geom, bx, dx, nx)
    n_cells = int(nx.prod())
    inside = (idx < n_cells).float().mean().item()
    f2d = feats.view(-1, 80)
    print(f"points {n_pts:,} x 80 ch -> {int(nx[0])}x{int(nx[1])} cells; {inside:.1%} inside the grid; "
          f"torch threads {torch.get_num_threads()}")

    def bare():
        out = torch.zeros(n_cells + 1, 80)
        out.index_add_(0, idx, f2d)
        return out

    ours_out = bev_pool(feats, geom, bx, dx, nx)
    ref = cumsum_pool(feats, geom, bx, dx, nx)
    bare_out = bare()[:n_cells].view(360, 360, 80).permute(2, 0, 1)
    torch.testing.assert_close(ours_out[0], bare_out, rtol=1e-4, atol=1e-3)
    # fp32 cumsum over ~2 M rows carries absolute error ~ eps * running sum (~1e6 here)
    torch.testing.assert_close(ours_out, ref, rtol=1e-2, atol=0.5)

    with torch.no_grad():
        t_ours = timed(lambda: bev_pool(feats, geom, bx, dx, nx), args.repeat)
        t_bare = timed(bare, args.repeat)
        t_cum = timed(lambda: cumsum_pool(feats, geom, bx, dx, nx), max(1, args.repeat // 2))
        t_cell = timed(lambda: cell_index(geom, bx, dx, nx), args.repeat)

    fr = feats.clone().requires_grad_()
    grad = torch.rand(1, 80, 360, 360)

    def ours_fb():
        fr.grad = None
        bev_pool(fr, geom, bx, dx, nx).backward(grad)

    fb = f2d.clone().requires_grad_()
    gflat = torch.cat([grad[0].permute(1, 2, 0).reshape(-1, 80), torch.zeros(1, 80)])

    def bare_fb():
        fb.grad = None
        out = torch.zeros(n_cells + 1, 80).index_add(0, idx, fb)
        out.backward(gflat)

    t_ours_fb = timed(ours_fb, args.repeat)
    t_bare_fb = timed(bare_fb, args.repeat)

    # the model's path: fused lift + splat from depth probabilities and context (no frustum feature tensor)
    depth = torch.rand(1, 6, 118, 32, 88).softmax(2)
    context = torch.rand(1, 6, 80, 32, 88)
    lifted = bev_pool_lift(depth, context, geom, bx, dx, nx)
    feats_l = (depth.unsqueeze(2) * context.unsqueeze(3)).permute(0, 1, 3, 4, 5, 2)
    torch.testing.assert_close(lifted, bev_pool(feats_l, geom, bx, dx, nx), rtol=1e-4, atol=1e-4)
    del feats_l
    with torch.no_grad():
        t_lift = timed(lambda: bev_pool_lift(depth, context, geom, bx, dx, nx), args.repeat)
        t_mat = timed(lambda: bev_pool((depth.unsqueeze(2) * context.unsqueeze(3)).permute(0, 1, 3, 4, 5, 2), geom,
                                       bx, dx, nx), max(1, args.repeat // 2))
    dr, cr = depth.clone().requires_grad_(), context.clone().requires_grad_()

    def lift_fb():
        dr.grad = cr.grad = None
        bev_pool_lift(dr, cr, geom, bx, dx, nx).backward(grad)

    def mat_fb():
        dr.grad = cr.grad = None
        bev_pool((dr.unsqueeze(2) * cr.unsqueeze(3)).permute(0, 1, 3, 4, 5, 2), geom, bx, dx, nx).backward(grad)

    t_lift_fb = timed(lift_fb, args.repeat)
    t_mat_fb = timed(mat_fb, max(1, args.repeat // 2))

    print(f"{'method':<44}{'ms':>10}")
    for name, t in [("cumsum trick (LSS), forward", t_cum), ("bare index_add_ (cells precomputed), forward", t_bare),
                    ("ours bev_pool (incl. geometry->cell), forward", t_ours), ("  of which geometry->cell", t_cell),
                    ("bare index_add_, forward+backward", t_bare_fb), ("ours bev_pool, forward+backward", t_ours_fb),
                    ("lift (depth x context) + ours bev_pool, fwd", t_mat), ("ours fused lift+splat, forward", t_lift),
                    ("lift + ours bev_pool, forward+backward", t_mat_fb),
                    ("ours fused lift+splat, forward+backward", t_lift_fb)]:
        print(f"{name:<44}{t * 1e3:>10.1f}")
    r_cum, r_bare, r_fb = t_cum / t_ours, t_ours / t_bare, t_ours_fb / t_bare_fb
    print(f"ratio cumsum / ours            = {r_cum:6.1f}x   (goal >= 20x) {'OK' if r_cum >= 20 else 'MISSED'}")
    print(f"ratio ours / bare scatter      = {r_bare:6.2f}x   (goal <= 2x)  {'OK' if r_bare <= 2 else 'MISSED'}")
    print(f"ratio ours / bare, fwd+bwd     = {r_fb:6.2f}x")
    r_fused = t_cum / t_lift
    print(f"ratio cumsum / fused lift+splat = {r_fused:5.1f}x   (fused includes the lift the cumsum run is given)")
    print(f"ratio fused / bare scatter     = {t_lift / t_bare:6.2f}x")
    print(f"ratio lift+pool / fused, fwd+bwd = {t_mat_fb / t_lift_fb:4.1f}x")
    return {"cumsum_over_ours": r_cum, "ours_over_bare": r_bare, "ours_over_bare_fwd_bwd": r_fb,
            "cumsum_over_fused": r_fused}


if __name__ == "__main__":
    main()
