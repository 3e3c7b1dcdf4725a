"""Does data loading starve training? data_time / step time for the tiny config on the demo's synthetic data.

Runs the demo's data settings (batch 2, 2 workers, 1 sweep, train-mode augmentation) through the trainer's own
loader (`model.builders.train_loader`) against real tiny-model training steps and reports how long each iteration
waits for its batch. Baseline in the same run: the same loop
with workers=0 (every batch loaded synchronously in the training process). Goal: data wait ≤ 5 % of an iteration.

    python bench/data_loading.py [--steps 4] [--workers 2] [--root data/nuscenes-synth]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--root", default=str(ROOT / "data" / "nuscenes-synth"))
    args = ap.parse_args()

    import torch

    from bevctl.phases import load_phase
    from model import builders
    from model.data import build_dataset, collate
    from model.data.synth import ensure_dataset
    from model.distributed import DistInfo

    phase = load_phase("demo", [f"data.root={args.root}"])
    t = time.perf_counter()
    ensure_dataset(args.root, scenes=phase.data.synth.scenes, samples_per_scene=phase.data.synth.samples_per_scene,
                   seed=phase.data.synth.seed, sweeps=max(phase.data.sweeps, 1))
    print(f"dataset ready in {time.perf_counter() - t:.1f} s at {args.root}")

    step, what = _model_step(phase)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for workers in (0, args.workers):
        from model.config import get_config

        cfg = get_config(phase.model.config, gca=phase.model.gca, heads=tuple(phase.model.heads))
        dataset = build_dataset(cfg, phase.data, split=phase.data.train_split, train=True)
        run = phase.model_copy(update={"data": phase.data.model_copy(update={"workers": workers}),
                                       "train": phase.train.model_copy(update={"batch_size": args.batch_size})})
        parts = builders.Parts(None, cfg, dataset, None, collate)
        loader, sampler, _ = builders.train_loader(parts, run, DistInfo())
        sampler.set_epoch(0)
        data_times, step_times = [], []
        it = iter(loader)
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            t1 = time.perf_counter()
            step(batch)
            t2 = time.perf_counter()
            if i >= args.warmup:
                data_times.append(t1 - t0)
                step_times.append(t2 - t1)
        del it, loader
        d, s = statistics.mean(data_times), statistics.mean(step_times)
        results[workers] = (d, s)
        print(f"workers={workers}: data_time {d * 1000:8.1f} ms   model step {s * 1000:8.1f} ms   "
              f"data share {d / (d + s):6.1%}")
    d0, s0 = results[0]
    dw, sw = results[args.workers]
    share = dw / (dw + sw)
    print(f"model step: {what}")
    print(f"ratio data_time / step_time with {args.workers} workers: {dw / sw:.3f} "
          f"(baseline workers=0: {d0 / s0:.3f}); data share of an iteration {share:.1%} (goal <= 5%): "
          f"{'OK' if share <= 0.05 else 'STARVED'}")
    return 0


def _model_step(phase):
    """A real tiny-model training step; forward-only if this torch/spconv build cannot run the backward on CPU."""
    import torch

    from model.bevfusion import build_model
    from model.config import get_config

    cfg = get_config(phase.model.config, gca=phase.model.gca, heads=tuple(phase.model.heads))
    model = build_model(cfg, device="cpu")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def full(batch):
        out = model(batch)
        loss = sum(v for k, v in out.items() if k.startswith("loss/"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def forward_only(batch):
        with torch.no_grad():
            model(batch)

    try:
        from model.data import build_dataset, collate

        probe = build_dataset(cfg, phase.data, split=phase.data.train_split, train=True)
        full(collate([probe[0], probe[1]]))
        return full, "tiny BEVFusion forward + backward + AdamW step"
    except Exception as exc:  # noqa: BLE001 - report and measure what runs
        print(f"note: the training step fails here ({type(exc).__name__}: {str(exc)[:80]}); timing forward only")
        return forward_only, "tiny BEVFusion forward only (backward unavailable in this build)"


if __name__ == "__main__":
    sys.exit(main())
