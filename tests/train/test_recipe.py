"""The original's recipe against its formulas: CBGS sampling frequencies, fp16 dynamic loss scaling (growth and
backoff on inf), precise BN, heatmap bias init and the lr scale-by-batch rule. (Cyclic lr and momentum:
test_train_loop.py.)"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
from torch import nn

from bevctl.phases import load_phase
from model.distributed import DistInfo

# --------------------------------------------------------------------------------------------- CBGS


def test_cbgs_gives_each_class_an_equal_share_as_mmdet3d():
    from model.data.sampler import cbgs_indices

    rng = np.random.default_rng(0)
    C = 4
    # class 0 in every sample, class 3 in few: an imbalanced split of 200 samples
    class_ids = [{0} | ({1} if rng.random() < 0.5 else set()) | ({2} if rng.random() < 0.2 else set())
                 | ({3} if rng.random() < 0.05 else set()) for _ in range(200)]
    n = collections.Counter(c for ids in class_ids for c in ids)
    D = sum(n.values())
    out = cbgs_indices(class_ids, C, seed=0)
    # mmdet3d CBGSDataset: class c's list of n_c samples is resampled to int(n_c * (1/C) / (n_c / D)) entries
    expected = [int(n[c] * (1 / C) / (n[c] / D)) for c in range(C)]
    assert len(out) == sum(expected) and abs(len(out) - D) < C
    start = 0
    for c in range(C):
        part = out[start:start + expected[c]]
        start += expected[c]
        assert all(c in class_ids[i] for i in part), "each class's entries are samples showing it"
    # the rare class's sample fraction approaches 1 / C (from about 5 %), the common one stays above it
    share = {c: sum(c in class_ids[i] for i in out) / len(out) for c in range(C)}
    assert n[3] / 200 < 0.1 and share[3] >= 1 / C - 0.01
    assert share[0] == 1.0
    assert cbgs_indices(class_ids, C, seed=0) == out and cbgs_indices(class_ids, C, seed=1) != out


def test_cbgs_skips_classes_without_samples():
    from model.data.sampler import cbgs_indices

    out = cbgs_indices([{0}, {0}, {1}, set()], num_classes=10, seed=0)
    # D = 3: each present class gets int(3 / 10) = 0 ... the original's formula, as is
    assert out == []
    out = cbgs_indices([{0}] * 30 + [{1}] * 10, num_classes=2, seed=0)
    assert collections.Counter(i < 30 for i in out) == {True: 20, False: 20}


def test_class_balanced_dataset_on_synthetic_nuscenes():
    from model.data.nuscenes_dataset import NuScenesDataset
    from model.data.sampler import ClassBalanced
    from tests.helpers.synth_data import small_dataset

    ds = NuScenesDataset(small_dataset(), "v1.0-mini", "mini_train", sweeps=1, image_size=(64, 176), map_classes=(),
                         train=True)
    balanced = ClassBalanced(ds, num_classes=10, seed=0)
    D = sum(len(ds.class_ids(i)) for i in range(len(ds)))
    assert len(balanced) > len(ds) and abs(len(balanced) - D) <= 10
    item = balanced[0]
    source = balanced.indices[0]
    assert set(item["gt_labels"].tolist()) <= ds.class_ids(source)
    twins = [i for i, s in enumerate(balanced.indices) if s == source and i != 0]
    if twins:  # two copies of one sample draw different augmentations
        assert not torch.equal(balanced[twins[0]]["lidar_aug_matrix"], item["lidar_aug_matrix"])


# --------------------------------------------------------------------------------------------- fp16 loss scaling


class Scaled(nn.Module):
    """loss = k * sum(w): with k = 1e35 the loss is finite but the scaled loss and its gradients overflow."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, batch):
        return {"loss/x": self.w.float().sum() * batch["k"]}


def _trainer(model, *sets):
    from model import builders
    from model.train import Trainer

    class Sink:
        def __getattr__(self, name):
            return lambda *a, **k: None

    phase = load_phase("demo", ["train.device=cpu", *sets])
    optimizer, schedule, scaler = builders.build_optimizer(model, phase, DistInfo(), 100, 10)
    return Trainer(phase, None, DistInfo(), Sink(), None, None, model, None, None, None, None, optimizer, schedule,
                   scaler, 10, 100)


def test_fp16_loss_scale_backs_off_on_inf_and_grows_after_the_interval():
    from model.train import train_step

    model = Scaled()
    t = _trainer(model, "train.precision=fp16", "train.loss_scale_growth_interval=3", "optim.warmup_iters=0")
    scale = t.scaler.get_scale()
    assert scale == 2.0**16  # torch.amp.GradScaler's initial scale
    before = model.w.detach().clone()
    step = train_step(t, {"k": torch.tensor(1e35)}, 1, 1)
    assert step.ok and math.isinf(step.grad_norm) and t.overflow_steps == 1
    assert t.scaler.get_scale() == scale * 0.5, "backoff: halved on inf gradients"
    assert torch.equal(model.w, before), "the overflowing step is skipped"
    for i in range(3):
        assert t.scaler.get_scale() == scale * 0.5, "no growth before growth_interval clean steps"
        assert train_step(t, {"k": torch.tensor(1.0)}, 1, 2 + i).ok
    assert t.scaler.get_scale() == scale, "growth: doubled after growth_interval clean steps"
    assert not torch.equal(model.w, before) and t.nonfinite_in_row == 0


def test_fp32_inf_gradient_is_a_skipped_step_not_an_overflow():
    from model.train import train_step

    model = Scaled()
    t = _trainer(model, "train.precision=fp32")
    before = model.w.detach().clone()
    step = train_step(t, {"k": torch.tensor(float("inf"))}, 1, 1)
    assert not step.ok and t.nonfinite_in_row == 1 and t.overflow_steps == 0 and t.global_step == 0
    assert torch.equal(model.w, before)


# --------------------------------------------------------------------------------------------- lr scaling


def test_lr_scale_by_global_batch_is_explicit():
    from model import builders

    plain = load_phase("demo", ["optim.lr=1e-3", "train.batch_size=4"])
    linear = load_phase("demo", ["optim.lr=1e-3", "train.batch_size=4", "optim.scale_lr=linear",
                                 "optim.reference_batch=32"])
    assert plain.optim.effective_lr(64) == 1e-3
    assert linear.optim.effective_lr(64) == pytest.approx(2e-3) and linear.optim.effective_lr(8) == pytest.approx(2.5e-4)
    info = DistInfo(world_size=2)
    opt, schedule, _ = builders.build_optimizer(nn.Linear(2, 2), linear.model_copy(
        update={"optim": linear.optim.model_copy(update={"warmup_iters": 0, "schedule": "constant"})}), info, 10, 5)
    assert schedule.get_lr() == pytest.approx(1e-3 * 8 / 32)
    # the preflight's note when --gpus changes the global batch
    assert plain.lr_note(2, 2) is None
    assert "lr stays 0.001" in plain.lr_note(8, 1) and "scale_lr=linear" in plain.lr_note(8, 1)
    assert "scaled linearly to 0.001" in linear.lr_note(8, 1)


# --------------------------------------------------------------------------------------------- precise BN


def test_precise_bn_sets_eval_statistics_to_the_population_average():
    from model.precise_bn import recompute_bn_stats

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5, momentum=0.01), nn.Dropout(0.5))
    batches = [{"x": torch.randn(16, 3) * 3 + 2} for _ in range(4)]

    class Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, batch):
            return self.m(batch["x"])

    wrapped = Wrap(model)
    wrapped.train()
    for b in batches[:2]:  # a short "training": momentum 0.01 leaves ~98 % of the initial statistics
        wrapped(b)
    bn = model[1]
    stale_mean, stale_var = bn.running_mean.clone(), bn.running_var.clone()
    with torch.no_grad():
        feats = [model[0](b["x"]) for b in batches]
    want_mean = torch.stack([f.mean(0) for f in feats]).mean(0)
    want_var = torch.stack([f.var(0, unbiased=True) for f in feats]).mean(0)
    wrapped.eval()
    rng = torch.get_rng_state()
    eval_before = wrapped(batches[0]).detach()
    assert recompute_bn_stats(wrapped, batches, 4, DistInfo()) == 4
    assert torch.allclose(bn.running_mean, want_mean, atol=1e-5) and torch.allclose(bn.running_var, want_var, atol=1e-4)
    assert not torch.allclose(bn.running_mean, stale_mean, atol=0.1) and not torch.allclose(bn.running_var, stale_var)
    assert not torch.allclose(wrapped(batches[0]), eval_before), "eval-mode outputs change"
    assert bn.momentum == 0.01 and not wrapped.training
    assert torch.equal(torch.get_rng_state(), rng), "dropout draws do not move the run's RNG"


# --------------------------------------------------------------------------------------------- heatmap bias


def test_heatmap_bias_init_option():
    from model import builders

    off = load_phase("demo", ["model.heatmap_bias_init=null"])
    on = load_phase("demo", ["model.heatmap_bias_init=-2.19"])
    default = builders.build_model(off)
    head = default.heads["object"]
    assert not torch.all(head.heatmap_head[-1].bias == -2.19), "default: the original's effective init"
    model = builders.build_model(on)
    head = model.heads["object"]
    assert torch.all(head.heatmap_head[-1].bias == -2.19)
    assert all(torch.all(ffn.heatmap[-1].bias == -2.19) for ffn in head.prediction_heads)
    assert torch.sigmoid(torch.tensor(-2.19)).item() == pytest.approx(0.1, abs=1e-3)


@pytest.mark.slow
def test_start_preflight_notes_the_lr_when_gpus_change_the_global_batch(tmp_path):
    import json

    from tests.conftest import run_cli

    def checks(*args):
        result = run_cli("start", "demo", "--dry-run", "--json", "--local", "--set", "launch.cpu_processes=1", *args,
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return {c["label"]: c for c in json.loads(result.stdout)["checks"]}

    assert "learning rate" not in checks()
    note = checks("--gpus", "2")["learning rate"]
    assert note["status"] == "info" and "global batch 2 (phase: 1)" in note["detail"] and "scale_lr=linear" in note["detail"]
    scaled = checks("--gpus", "2", "--set", "optim.scale_lr=linear", "--set", "optim.reference_batch=1")["learning rate"]
    assert "scaled linearly to 0.0006" in scaled["detail"]  # the demo's lr 3e-4 x 2 / 1
