"""GPU readiness: the full model's training step on CUDA, and bev_pool's CUDA path against the cumsum trick.

- Step: the full BEVFusion (task GCA, both heads) at batch 1, 2 and 4 per GPU in fp32, fp16 (autocast + dynamic
  loss scaling, as the trainer's `train_step`) and bf16 (autocast): median step time (forward, backward, AdamW) and
  peak memory; ratios against fp32 at batch 1, measured in the same run.
- Pooling: `model.ops.bev_pool` on CUDA against LSS's cumsum trick (bench/bev_pool.py) at the full geometry.

Without a CUDA device it prints "no CUDA device" and exits 0.

    python bench/gpu_step.py [--repeat 5] [--batches 1 2 4] [--precisions fp32 fp16 bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"], choices=["fp32", "fp16", "bf16"])
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    device = torch.device("cuda", 0)
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    results = {}
    for batch_size in args.batches:
        for precision in args.precisions:
            try:
                results[(batch_size, precision)] = step_time(batch_size, precision, args.repeat, device)
            except torch.cuda.OutOfMemoryError:
                results[(batch_size, precision)] = None
            torch.cuda.empty_cache()
    base = results.get((args.batches[0], args.precisions[0]))
    print(f"{'batch':>5} {'precision':>9} {'step ms':>9} {'peak MiB':>9} {'ms/sample':>10} {'vs base':>8}")
    for (batch_size, precision), r in results.items():
        if r is None:
            print(f"{batch_size:>5} {precision:>9} {'out of memory':>29}")
            continue
        t, mem = r
        ratio = base[0] / t * batch_size / args.batches[0] if base else float("nan")
        print(f"{batch_size:>5} {precision:>9} {t * 1e3:>9.1f} {mem:>9.0f} {t * 1e3 / batch_size:>10.1f} {ratio:>7.2f}x")
    print(f"(vs base: samples/s relative to batch {args.batches[0]} {args.precisions[0]})")
    pool(device, args.repeat)
    return 0


def step_time(batch_size: int, precision: str, repeat: int, device) -> tuple[float, float]:
    """Median seconds per training step and peak memory (MiB) of the full model."""
    import torch

    from model.bevfusion import build_model
    from model.config import get_config
    from model.data.batch import to_device
    from tests.helpers.model_batch import make_batch

    torch.manual_seed(0)
    cfg = get_config("full", gca="task")
    model = build_model(cfg).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    batch = to_device(make_batch(cfg, batch_size=batch_size), device)

    def step():
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            out = model(batch)
        loss = sum(v for k, v in out.items() if k.startswith("loss/"))
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: cuDNN autotuning, allocator
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    return statistics.median(times), peak


def pool(device, repeat: int) -> None:
    """bev_pool on CUDA vs the cumsum trick, full geometry (one sample, 6 x 118 x 32 x 88 points, 80 channels)."""
    import torch

    from bench.bev_pool import ring_rig
    from model.camera.vtransform import DepthLSSTransform
    from model.ops.bev_pool import bev_pool

    torch.manual_seed(0)
    vt = DepthLSSTransform(256, 80, (256, 704), (32, 88), (-54, 54, 0.3), (-54, 54, 0.3), (-10, 10, 20), (1, 60, 0.5), 2)
    K, c2l = ring_rig()
    eye = torch.eye(4)
    with torch.no_grad():
        geom = vt.get_geometry(c2l, K, eye.expand(1, 6, 4, 4), eye.expand(1, 4, 4)).contiguous().to(device)
    feats = torch.rand(1, 6, 118, 32, 88, 80, device=device)
    bx, dx, nx = vt.bx.data.to(device), vt.dx.data.to(device), vt.nx.data.to(device)

    def cuda_cumsum():
        return _cumsum_on(device, feats, geom, bx, dx, nx)

    def timed(fn):
        fn()
        torch.cuda.synchronize(device)
        ts = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize(device)
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    with torch.no_grad():
        ours = bev_pool(feats, geom, bx, dx, nx)
        torch.testing.assert_close(ours, cuda_cumsum(), rtol=1e-2, atol=0.5)
        t_ours, t_cum = timed(lambda: bev_pool(feats, geom, bx, dx, nx)), timed(cuda_cumsum)
    print(f"bev_pool CUDA {t_ours * 1e3:.2f} ms, cumsum trick {t_cum * 1e3:.2f} ms: ratio cumsum / ours "
          f"{t_cum / t_ours:.1f}x")


def _cumsum_on(device, feats, geom, bx, dx, nx):
    """The cumsum trick of bench/bev_pool.py (`cumsum_pool`, CPU tensors) with every tensor on `device`."""
    import torch

    B, C = feats.shape[0], feats.shape[-1]
    X, Y, Z = (int(v) for v in nx.tolist())
    x = feats.reshape(-1, C)
    g = ((geom.reshape(-1, 3) - (bx - dx / 2.0)) / dx).long()
    b = torch.arange(B, device=device).repeat_interleave(x.shape[0] // B)
    kept = (g[:, 0] >= 0) & (g[:, 0] < X) & (g[:, 1] >= 0) & (g[:, 1] < Y) & (g[:, 2] >= 0) & (g[:, 2] < Z)
    x, g, b = x[kept], g[kept], b[kept]
    ranks = ((b * Z + g[:, 2]) * X + g[:, 0]) * Y + g[:, 1]
    order = ranks.argsort()
    x, ranks = x[order].cumsum(0), ranks[order]
    last = torch.ones(x.shape[0], dtype=torch.bool, device=device)
    last[:-1] = ranks[1:] != ranks[:-1]
    x, ranks = x[last], ranks[last]
    x = torch.cat((x[:1], x[1:] - x[:-1]))
    out = torch.zeros(B * Z * X * Y, C, device=device)
    out[ranks] = x
    return out.view(B, Z, X, Y, C).permute(0, 1, 4, 2, 3).reshape(B, Z * C, X, Y)


if __name__ == "__main__":
    sys.exit(main())
