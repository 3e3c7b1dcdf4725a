"""The tiny config trains: on a fixed hand-built batch its total loss falls by at least half in 50 CPU steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import model  # noqa: F401  (applies shims: spconv's CPU backward)
from model.bevfusion import build_model, total_loss
from model.config import get_config

from tests.helpers.equivalence import one_thread  # noqa: E402,F401  (fixture)
from tests.helpers.model_batch import make_batch  # noqa: E402


@pytest.mark.slow
def test_tiny_overfits_fixed_batch(one_thread):
    torch.manual_seed(0)
    cfg = get_config("tiny", gca="task")
    net = build_model(cfg).train()
    batch = make_batch(cfg, batch_size=2)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.01)
    losses, map_losses = [], []
    for _ in range(50):
        out = net(batch)
        expected = {"loss/object/loss_heatmap", "loss/object/layer_-1_loss_cls", "loss/object/layer_-1_loss_bbox",
                    "stats/object/matched_ious", *(f"loss/map/{c}/{t}" for c in cfg.map_classes
                                                   for t in ("focal", "dice"))}
        assert set(out) == expected
        loss = total_loss(out)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 35.0)
        opt.step()
        losses.append(loss.item())
        map_losses.append(sum(v.item() for k, v in out.items() if k.startswith("loss/map/")))
    assert losses[-1] <= 0.5 * losses[0], losses
    assert map_losses[-1] < map_losses[0], map_losses
    # the task GCA gates got gradients and moved
    assert net.task_gca["object"].reduce.weight.grad is not None

    net.eval()
    with torch.no_grad():
        results = net(batch)
    assert len(results) == 2
    r = results[0]
    assert set(r) == {"boxes_3d", "scores_3d", "labels_3d", "masks_bev"}
    assert r["boxes_3d"].shape[1] == 9 and r["labels_3d"].dtype == torch.long
    assert r["masks_bev"].shape == (6, *cfg.map_size) and 0 <= r["masks_bev"].min() <= r["masks_bev"].max() <= 1


def test_tiny_shared_and_none_forward(one_thread):
    for mode in ("shared", "none"):
        cfg = get_config("tiny", gca=mode, heads=("map",))
        net = build_model(cfg).train()
        out = net(make_batch(cfg, batch_size=1))
        assert set(out) == {f"loss/map/{c}/{t}" for c in cfg.map_classes for t in ("focal", "dice")}
        total_loss(out).backward()
