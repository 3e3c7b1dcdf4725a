"""model.evaluate: box conversion to the global frame, the official DetectionEval, BEV map IoU, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.evaluate import MAP_THRESHOLDS, boxes_to_global, map_metrics, seg_counts

ROOT = Path(__file__).resolve().parents[2]
SYNTH = ROOT / "data" / "nuscenes-synth-trainval"


def test_boxes_to_global_undoes_augmentation_and_applies_poses():
    yaw = 0.3
    aug = np.eye(4)
    aug[:3, :3] = 1.1 * np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    aug[:3, 3] = [1.0, -2.0, 0.1]
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = [0.9, 0.0, 1.8]
    ego2global = np.eye(4)
    ego2global[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # ego heading +90 degrees
    ego2global[:3, 3] = [100.0, 200.0, 0.0]
    # a box 10 m ahead of the LiDAR, heading along x, moving 2 m/s forward, before augmentation
    centre = np.array([10.0, 0.0, 0.0, 1.0])
    c_aug = aug @ centre
    box = np.array([[*c_aug[:3], 4.0 * 1.1, 2.0 * 1.1, 1.5 * 1.1, yaw, *(aug[:2, :2] @ [2.0, 0.0])]])
    (out,) = boxes_to_global(box, aug, lidar2ego, ego2global)
    assert out["translation"] == pytest.approx([100.0, 210.9, 1.8], abs=1e-6)
    assert out["size"] == pytest.approx([2.0, 4.0, 1.5])  # w, l, h
    w, x, y, z = out["rotation"]
    assert 2 * math.atan2(z, w) == pytest.approx(math.pi / 2)
    assert out["velocity"] == pytest.approx([0.0, 2.0], abs=1e-9)


def test_map_iou_per_threshold_and_max():
    gt = torch.zeros(2, 4, 4)
    gt[0, :2] = 1  # class 0: top half; class 1: empty
    pred = torch.zeros(2, 4, 4)
    pred[0, :2] = 0.5
    pred[0, 2, 0] = 0.4  # one false positive below 0.45
    metrics = map_metrics(seg_counts(pred, gt), ["a", "b"])
    assert metrics["map/a/iou@0.35"] == pytest.approx(8 / 9)
    assert metrics["map/a/iou@0.45"] == pytest.approx(1.0)
    assert metrics["map/a/iou@0.55"] == pytest.approx(0.0)
    assert metrics["map/a/iou@max"] == pytest.approx(1.0)
    assert metrics["map/b/iou@max"] == 0.0
    assert metrics["map/mean/iou@max"] == pytest.approx(0.5)
    assert len([k for k in metrics if k.startswith("map/a/iou@0")]) == len(MAP_THRESHOLDS)


class GroundTruthModel(torch.nn.Module):
    """Predicts the ground truth: the evaluation must then score perfect detection."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        out = []
        for b in range(len(batch["gt_boxes"])):
            n = len(batch["gt_labels"][b])
            out.append({"boxes_3d": batch["gt_boxes"][b], "scores_3d": torch.linspace(1, 0.5, n),
                        "labels_3d": batch["gt_labels"][b], "masks_bev": batch["gt_masks_bev"][b] * 0.9})
        return out


@pytest.fixture(scope="module")
def demo_phase():
    from bevctl.phases import load_phase
    from model.data.synth import ensure_dataset

    phase = load_phase("demo", [f"data.root={SYNTH}", "data.workers=0"])
    ensure_dataset(SYNTH, scenes=phase.data.synth.scenes, samples_per_scene=phase.data.synth.samples_per_scene,
                   seed=phase.data.synth.seed, sweeps=phase.data.sweeps, version=phase.data.version)
    return phase


def test_ground_truth_scores_perfect_detection_with_the_official_eval(tmp_path, demo_phase):
    from model import builders
    from model.distributed import DistInfo
    from model.evaluate import evaluate

    cfg = builders.model_config(demo_phase)
    val = builders.build_val_set(demo_phase, cfg)
    loader = builders.val_loader(val, demo_phase, DistInfo())
    result = evaluate(GroundTruthModel(cfg), loader, DistInfo(), phase=demo_phase, run_dir=tmp_path, progress=False)
    metrics = result.metrics
    assert result.batches == len(val)
    first = result.first_sample  # what the run sink gets for images of the first validation sample
    assert first["token"] == val.infos[0]["token"]
    assert first["masks_bev"].shape == first["gt_masks_bev"].shape == (6, *cfg.map_size)
    assert torch.equal(first["boxes_3d"], first["gt_boxes"])
    assert metrics["object/map"] == pytest.approx(1.0)
    assert metrics["object/nds"] > 0.9 and metrics["object/mATE"] < 1e-3 and metrics["object/mAOE"] < 1e-3
    assert metrics["object/car_ap_dist_0.5"] == pytest.approx(1.0)
    for cls in cfg.map_classes:
        assert f"map/{cls}/iou@0.65" in metrics
    assert 0.5 < metrics["map/mean/iou@max"] <= 1.0
    written = json.loads((tmp_path / "eval" / "results_nusc.json").read_text())
    assert len(written["results"]) == len(val) and written["meta"]["use_lidar"]


@pytest.mark.slow
def test_evaluate_cli_on_a_checkpoint(tmp_path, demo_phase):
    """`python -m model.evaluate --run-dir DIR --checkpoint X --json` on an untrained model's weights."""
    from bevctl import runs
    from model.bevfusion import build_model
    from model.config import get_config

    run = tmp_path / "run"
    run.mkdir()
    runs.write_manifest(run, runs.new_manifest("run", "demo", demo_phase.model_dump(mode="json")))
    torch.manual_seed(0)
    model = build_model(get_config("tiny", gca="task"))
    torch.save({"meta": {"epoch": 0}, "state_dict": model.state_dict()}, tmp_path / "untrained.pth")
    proc = subprocess.run([sys.executable, "-m", "model.evaluate", "--run-dir", str(run), "--checkpoint",
                           str(tmp_path / "untrained.pth"), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["schema"] == 1 and report["epoch"] == 0
    assert 0.0 <= report["metrics"]["object/map"] < 0.2 and "map/mean/iou@max" in report["metrics"]

    missing = subprocess.run([sys.executable, "-m", "model.evaluate", "--run-dir", str(run)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "not found" in missing.stderr
