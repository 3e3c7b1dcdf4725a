"""The parts a training or evaluation run is made of, each built from the phase: model, data, loaders, weights,
optimizer, schedule, loss scaler. `model.train` and `model.evaluate` both build through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset, DistributedSampler

from bevctl import runs
from bevctl.errors import BevctlError, UsageError
from bevctl.phases import Phase
from model import checkpoint as ckpt
from model import distributed as dist_utils
from model.data.loader import build_loader
from model.data.sampler import ClassBalanced, ResumableSampler
from model.distributed import DistInfo
from model.run_sink import RunSink
from model.schedule import LRSchedule, ScheduleSpec


@dataclass
class Parts:
    """What the loop needs from the model and data packages. Tests pass stand-ins through `build_parts`."""

    model: torch.nn.Module
    model_config: object
    train_set: Dataset
    val_set: Dataset | None
    collate: Callable


# --------------------------------------------------------------------------------------------- model and data


def model_config(phase: Phase):
    from model.config import get_config

    return get_config(phase.model.config, gca=phase.model.gca, heads=tuple(phase.model.heads))


def build_model(phase: Phase, cfg=None) -> torch.nn.Module:
    from model.bevfusion import build_model as _build

    model = _build(cfg or model_config(phase), device="cpu")
    if phase.model.heatmap_bias_init is not None:
        set_heatmap_bias(model, phase.model.heatmap_bias_init)
    return model


def set_heatmap_bias(model: torch.nn.Module, value: float) -> int:
    """Fill the class bias of the detection head's dense heatmap and of its per-query heatmap FFN with `value`.

    The original's FFN defines this init (-2.19: every class starts at probability 0.1) but never runs it; without
    it the first heatmap loss is over ten times larger. Returns how many bias tensors were set."""
    heads = getattr(model, "heads", None)
    if heads is None or "object" not in heads:
        return 0
    head = heads["object"]
    biases = [head.heatmap_head[-1].bias] + [ffn.heatmap[-1].bias for ffn in head.prediction_heads]
    with torch.no_grad():
        for b in biases:
            b.fill_(value)
    return len(biases)


def prepare_data(phase: Phase, cfg, info: DistInfo) -> None:
    """Generate the synthetic dataset once (rank 0) when the phase asks for it; the others wait for it."""
    if not phase.data.synthetic:
        return
    error = None
    if info.is_main:
        try:
            from model.data.synth import ensure_dataset

            ensure_dataset(phase.data.root, version=phase.data.version, scenes=phase.data.synth.scenes,
                           samples_per_scene=phase.data.synth.samples_per_scene, seed=phase.data.synth.seed,
                           sweeps=phase.data.sweeps, config=cfg)
        except BevctlError as exc:
            error = exc.one_line()
    # Rank 0's failure reaches every rank, so nobody waits at a barrier for a dataset that never comes.
    error = dist_utils.broadcast_object(error, info)
    if error:
        raise UsageError(error)


def build_val_set(phase: Phase, cfg) -> Dataset:
    from model.data import build_dataset

    return build_dataset(cfg, phase.data, split=phase.data.val_split, train=False)


def build_parts(phase: Phase, info: DistInfo) -> Parts:
    """The bundled BEVFusion and the nuScenes-format data of the phase."""
    from model import data as data_pkg

    cfg = model_config(phase)
    model = build_model(phase, cfg)
    prepare_data(phase, cfg, info)
    train_set = data_pkg.build_dataset(cfg, phase.data, split=phase.data.train_split, train=True, seed=phase.train.seed)
    if phase.data.cbgs:
        train_set = ClassBalanced(train_set, len(cfg.object_classes), seed=phase.train.seed)
    return Parts(model, cfg, train_set, build_val_set(phase, cfg), data_pkg.collate)


# --------------------------------------------------------------------------------------------- loaders


def train_loader(parts: Parts, phase: Phase, info: DistInfo):
    """The training loader, its resumable sampler and the generator the trainer reseeds per epoch."""
    sampler = ResumableSampler(parts.train_set, info.rank, info.world_size, seed=phase.train.seed)
    generator = torch.Generator()
    loader = build_loader(parts.train_set, phase.train.batch_size, phase.data.workers, sampler=sampler,
                          collate=parts.collate, generator=generator)
    return loader, sampler, generator


def val_loader(val_set: Dataset, phase: Phase, info: DistInfo, collate: Callable | None = None):
    """Batch 1 per process, in order, each rank its shard (as the original's DistEvalHook)."""
    sampler = DistributedSampler(val_set, num_replicas=info.world_size, rank=info.rank, shuffle=False)
    kw = {"collate": collate} if collate is not None else {}
    return build_loader(val_set, 1, phase.data.workers, sampler=sampler, **kw)


# --------------------------------------------------------------------------------------------- weights


def load_weights(model: torch.nn.Module, phase: Phase, sink: RunSink) -> None:
    """`load_from` (whole model, partial) then `pretrained` module files not already covered by it."""
    covered: set[str] = set()
    if phase.load_from:
        state = ckpt.extract_state_dict(ckpt.load_file(phase.load_from))
        report = ckpt.partial_load(model, state, path=phase.load_from, how="load_from", expect_missing=phase.expect_missing)
        report_load(report, sink)
        covered = {ckpt.module_group(k) for k in report.matched}
    for prefix, path in phase.pretrained.items():
        if any(g == prefix or g.startswith(prefix + ".") for g in covered):
            sink.info(f"pretrained {prefix}: skipped {path}, load_from already covers {prefix}")
            continue
        state = ckpt.extract_state_dict(ckpt.load_file(path))
        report = ckpt.partial_load(model, state, path=path, how=f"pretrained:{prefix}", prefix=prefix)
        report_load(report, sink)


def report_load(report: ckpt.LoadReport, sink: RunSink) -> None:
    for line in report.log_lines():
        sink.info(line)
    sink.emit("checkpoint_loaded", **report.event())
    if not report.ok:
        raise UsageError(
            report.failure(),
            fix="add the globs to expect_missing if those modules are new, or point load_from at the right file",
        )


def resume_path(phase: Phase, run_dir: Path) -> Path | None:
    if not phase.resume:
        return None
    if phase.resume == "auto":
        latest = run_dir / runs.LATEST
        return latest if latest.is_file() else None
    path = Path(phase.resume)
    if not path.is_file():
        raise UsageError(f"resume checkpoint {path} not found", fix="use resume=auto or an existing checkpoint path")
    return path


# --------------------------------------------------------------------------------------------- optimisation


def build_optimizer(model: torch.nn.Module, phase: Phase, info: DistInfo, total_iters: int, iters_per_epoch: int):
    """AdamW, its lr/momentum schedule (lr scaled by the global batch when `optim.scale_lr: linear`) and the
    loss scaler (active for fp16: dynamic scaling, halved on inf/NaN gradients, doubled after
    `train.loss_scale_growth_interval` clean steps)."""
    oc, tc = phase.optim, phase.train
    lr = oc.effective_lr(tc.batch_size * info.world_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=oc.weight_decay)
    schedule = LRSchedule(optimizer, ScheduleSpec.from_optim(oc, total_iters, iters_per_epoch, lr=lr))
    scaler = torch.amp.GradScaler(info.device.type, enabled=tc.precision == "fp16",
                                  growth_interval=tc.loss_scale_growth_interval)
    return optimizer, schedule, scaler


def checkpoint_state(model, optimizer, schedule, scaler, *, meta: dict, rng: list, data_state: dict) -> dict:
    """A run checkpoint's entries (every one loads with `torch.load(weights_only=True)`)."""
    sd = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    return {
        "meta": meta,
        "state_dict": sd,
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "data_state": data_state,
    }


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
