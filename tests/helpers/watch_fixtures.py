"""Runs and third-party logs for the `bevctl watch` tests, written in their real formats (no tests here)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from bevctl import runs

PHASE4A_BANDS = [
    {"metric": "loss/map/divider/dice", "epochs": [5, 10], "start": 0.525, "end": 0.50, "tolerance": 0.02},
    {"metric": "loss/map/divider/dice", "epochs": [10, 15], "start": 0.50, "end": 0.45, "tolerance": 0.02},
    {"metric": "object/map", "epochs": [15, 20], "start": 0.68, "end": 0.70, "tolerance": 0.02},
]


def phase_config(**changes: Any) -> dict[str, Any]:
    config = {
        "name": "phase4a",
        "model": {"config": "full", "gca": "task", "heads": ["object", "map"]},
        "load_from": "runs/phase3/epoch_5.pth",
        "expect_missing": ["task_gca.object.*", "task_gca.map.*"],
        "train": {"epochs": 20, "precision": "fp32"},
        "expectations": PHASE4A_BANDS,
    }
    config.update(changes)
    return config


def losses(step: int, dice: float) -> dict[str, float]:
    metrics = {
        "loss/object/loss_heatmap": 1.2 - 0.001 * step,
        "loss/object/layer_-1_loss_cls": 0.3,
        "loss/object/layer_-1_loss_bbox": 0.8,
        "stats/object/matched_ious": 0.4,
        "loss/map/divider/focal": 0.08,
        "loss/map/divider/dice": dice,
    }
    metrics["loss"] = sum(v for k, v in metrics.items() if k.startswith("loss/"))
    metrics["grad_norm"] = 25.0
    return metrics


def write_run(
    run_dir: Path,
    epochs: int = 6,
    iters: int = 10,
    dice=lambda epoch, it: 0.53 - 0.004 * epoch,
    config: dict[str, Any] | None = None,
    gca_params: dict[str, int] | None = None,
    missing: list[str] | None = None,
    nan_at: int | None = None,
    end: bool = True,
    val: bool = True,
    status: str = "running",
) -> Path:
    """A run as the trainer writes it, through `bevctl.runs` (EventWriter + TextLog)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else phase_config()
    runs.write_manifest(run_dir, runs.new_manifest(run_dir.name, "phase4a", config, status=status))
    params = gca_params if gca_params is not None else {"object": 131072, "map": 131072}
    missing = missing if missing is not None else ["task_gca.object.conv.weight", "task_gca.map.conv.weight"]
    log = runs.TextLog(run_dir / "20261125_091044.log")
    with runs.EventWriter(run_dir / runs.EVENTS) as events:
        events.emit("run_start", phase="phase4a", world_size=1, epochs=epochs, iters_per_epoch=iters, start_epoch=1,
                    start_iter=0, precision="fp32", model="full", gca="task")
        events.emit("gca_enabled", mode="task", params=params, total=sum(params.values()))
        log.info("[BEVFusion] Task-specific GCA mode enabled")
        events.emit("checkpoint_loaded", path="runs/phase3/epoch_5.pth", how="load_from", matched=900,
                    missing=missing, unexpected=[], mismatched=[], missing_globs=runs.compress_keys(missing), ok=True)
        step = 0
        for epoch in range(1, epochs + 1):
            for it in range(1, iters + 1):
                step += 1
                metrics = losses(step, dice(epoch, it))
                if nan_at is not None and step == nan_at:
                    metrics["loss"] = float("nan")
                events.emit("train", epoch=epoch, iter=it, iters_per_epoch=iters, global_step=step, lr=2e-4,
                            step_time=0.5, data_time=0.05, memory=2048, **metrics)
                log.info(runs.format_train_line(epoch, it, iters, 2e-4, 10.0, 0.5, 0.05, 2048, metrics))
            if val:
                events.emit("val", epoch=epoch, **{"object/map": 0.60, "object/nds": 0.65, "map/mean/iou@max": 0.5,
                                                    "map/divider/iou@max": 0.41, "map/drivable_area/iou@max": 0.8})
        if end:
            events.emit("run_end", status="finished", exit_code=0, message="done")
    log.close()
    if end:
        runs.update_manifest(run_dir, status="finished", exit_code=0)
    return run_dir


# mmcv 1.x TextLoggerHook (the original BEVFusion): the reference's line format, tab after the step.
MMCV_TEXT = """\
2022-10-17 18:00:01,001 - mmdet3d - INFO - Environment info:
------------------------------------------------------------
sys.platform: linux
2022-10-17 18:00:02,002 - mmdet3d - INFO - [BEVFusion] ✨✨ Task-specific GCA mode enabled ✨✨
2022-10-17 18:00:02,003 - mmdet3d - INFO -   [object] GCA: params: 131,072
2022-10-17 18:00:02,004 - mmdet3d - INFO -   [map] GCA: params: 131,072
2022-10-17 18:00:02,005 - mmdet3d - INFO -   Total: 262,144
2022-10-17 18:00:03,000 - mmdet3d - INFO - load checkpoint from local path: /workspace/bevfusion/runs/phase3/epoch_5.pth
2022-10-17 18:00:03,100 - mmdet3d - WARNING - The following keys in model are not found in checkpoint:
task_gca.object.*
task_gca.map.*

2022-10-17 18:10:44,756 - mmdet3d - INFO - Epoch [1][1850/2575]\tlr: 2.158e-05, eta: 5 days, 12:01:11, time: 9.773, data_time: 0.882, memory: 24562, loss/object/loss_heatmap: 1.6029, loss/map/divider/dice: 0.5300, loss: 15.6690, grad_norm: 28.0689
2022-10-17 18:18:52,112 - mmdet3d - INFO - Epoch [1][1900/2575]\tlr: 2.160e-05, eta: 5 days, 11:59:01, time: 9.751, data_time: 0.871, memory: 24562, loss/object/loss_heatmap: 1.5988, loss/map/divider/dice: 0.5290, loss: 15.5012, grad_norm: nan
2022-10-18 01:00:00,000 - mmdet3d - INFO - Epoch(val) [1][6019]\tobject/car_ap_dist_2.0: 0.8712, object/map: 0.6512, object/nds: 0.6901, map/divider/iou@max: 0.4012, map/mean/iou@max: 0.5512
"""

MMCV_JSON = [
    {"env_info": "sys.platform: linux", "seed": 0, "exp_name": "convfuser.yaml"},
    {"mode": "train", "epoch": 1, "iter": 50, "lr": 0.0002, "memory": 24562, "data_time": 0.12345,
     "loss/object/loss_heatmap": 1.60291, "loss/map/divider/dice": 0.53, "loss": 9.87654, "grad_norm": 28.06891,
     "time": 2.34567},
    {"mode": "train", "epoch": 1, "iter": 100, "lr": 0.0002, "memory": 24562, "data_time": 0.1211,
     "loss/object/loss_heatmap": 1.5, "loss/map/divider/dice": 0.52, "loss": 9.5, "grad_norm": 27.0, "time": 2.3},
    {"mode": "val", "epoch": 1, "iter": 6019, "lr": 0.0002, "object/map": 0.6512, "object/nds": 0.6901},
]

# mmengine (mmdet3d projects/BEVFusion): two spaces between fields, `loss` first; the reference's line.
MMENGINE_TEXT = """\
2025/04/09 13:10:00 - mmengine - INFO - load checkpoint from local path: work_dirs/lidar/epoch_20.pth
2025/04/09 13:17:08 - mmengine - INFO - Epoch(train)  [5][5550/7724]  lr: 6.7528e-04  eta: 1 day, 0:32:22  time: 0.7496  data_time: 0.0082  memory: 9160  grad_norm: 58.9075  loss: 8.5249  loss_heatmap: 2.8590  layer_-1_loss_cls: 0.3138  layer_-1_loss_bbox: 5.3521  matched_ious: 0.0103
2025/04/09 13:17:46 - mmengine - INFO - Epoch(train)  [5][5600/7724]  lr: 6.7401e-04  eta: 1 day, 0:31:40  time: 0.7510  data_time: 0.0080  memory: 9160  grad_norm: 57.1000  loss: 8.4000  loss_heatmap: 2.8000  layer_-1_loss_cls: 0.3100  layer_-1_loss_bbox: 5.2800  matched_ious: 0.0110
2025/04/09 14:40:00 - mmengine - INFO - Epoch(val)  [5][  50/6019]    eta: 0:20:00  time: 0.2000  data_time: 0.0100  memory: 3000
2025/04/09 15:00:00 - mmengine - INFO - Epoch(val) [5][6019/6019]    NuScenes metric/pred_instances_3d_NuScenes/mAP: 0.6490  NuScenes metric/pred_instances_3d_NuScenes/NDS: 0.6960  data_time: 0.0090  time: 0.2100
"""

MMENGINE_SCALARS = [
    {"lr": 6.7528e-04, "data_time": 0.0082, "grad_norm": 58.9075, "loss": 8.5249, "loss_heatmap": 2.859,
     "layer_-1_loss_cls": 0.3138, "layer_-1_loss_bbox": 5.3521, "matched_ious": 0.0103, "time": 0.7496, "epoch": 5,
     "iter": 36446, "memory": 9160, "step": 36446},
    {"lr": 6.7401e-04, "data_time": 0.008, "grad_norm": 57.1, "loss": 8.4, "loss_heatmap": 2.8,
     "layer_-1_loss_cls": 0.31, "layer_-1_loss_bbox": 5.28, "matched_ious": 0.011, "time": 0.751, "epoch": 5,
     "iter": 36496, "memory": 9160, "step": 36496},
    {"NuScenes metric/pred_instances_3d_NuScenes/NDS": 0.696, "NuScenes metric/pred_instances_3d_NuScenes/mAP": 0.649,
     "data_time": 0.009, "time": 0.21, "step": 5},
]


def write_json_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def train_event_line(epoch: int, it: int, loss: float, **extra: float) -> str:
    event = {"schema": 1, "time": 1.0, "kind": "train", "epoch": epoch, "iter": it, "iters_per_epoch": 10,
             "global_step": (epoch - 1) * 10 + it, "lr": 1e-3, "step_time": 0.5, "data_time": 0.1, "memory": 10,
             "loss": loss, **extra}
    return json.dumps(event) + "\n"


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


# mmengine's LogProcessor joins the learning rates it finds with one space (`base_lr: ... lr: ...`), and its
# `load_state_dict` warning is one message: the header line, then torch's size-mismatch lines and mmengine's
# key lists as continuation lines without a timestamp (mmengine/runner/checkpoint.py, log_processor.py).
MMENGINE_TWO_LR_AND_MISMATCH = """\
2025/04/09 13:10:00 - mmengine - INFO - Load checkpoint from work_dirs/phase3/epoch_5.pth
2025/04/09 13:10:01 - mmengine - WARNING - The model and loaded state dict do not match exactly

size mismatch for heads.object.heatmap_head.1.weight: copying a param with shape torch.Size([10, 64, 3, 3]) from \
checkpoint, the shape in current model is torch.Size([8, 64, 3, 3]).
size mismatch for heads.object.heatmap_head.1.bias: copying a param with shape torch.Size([10]) from checkpoint, \
the shape in current model is torch.Size([8]).
unexpected key in source state_dict: encoders.camera.backbone.fc.weight, encoders.camera.backbone.fc.bias

missing keys in source state_dict: task_gca.object.conv.weight, task_gca.map.conv.weight

2025/04/09 13:17:08 - mmengine - INFO - Epoch(train)  [5][5550/7724]  base_lr: 6.7000e-04 lr: 6.7528e-04  eta: \
1 day, 0:32:22  time: 0.7496  data_time: 0.0082  memory: 9160  grad_norm: 58.9075  loss: 8.5249  loss_heatmap: 2.8590
2025/04/09 13:17:46 - mmengine - INFO - Epoch(train)  [5][5600/7724]  base_lr: 6.7000e-04 lr: 6.7401e-04  eta: \
1 day, 0:31:40  time: 0.7510  data_time: 0.0080  memory: 9160  grad_norm: 57.1000  loss: 8.4000  loss_heatmap: 2.8000
"""

# mmcv 1.x TextLoggerHook with per-group learning rates (`lr_<group>: ...` joined by one space), and its
# `load_state_dict` warning (mmcv/runner/checkpoint.py, same wording as mmengine's), a run started mid-epoch.
MMCV_GROUPS_AND_UNEXPECTED = """\
2022-10-17 18:00:03,000 - mmdet3d - INFO - load checkpoint from local path: runs/phase3/epoch_5.pth
2022-10-17 18:00:03,100 - mmdet3d - WARNING - The model and loaded state dict do not match exactly

unexpected key in source state_dict: heads.object.old_head.weight

2022-10-17 18:10:44,756 - mmdet3d - INFO - Epoch [1][1850/2575]\tlr_img_backbone: 2.000e-05 lr_pts: 2.000e-04, \
eta: 5 days, 12:01:11, time: 9.773, data_time: 0.882, memory: 24562, loss: 15.6690, grad_norm: 28.0689
2022-10-17 18:18:52,112 - mmdet3d - INFO - Epoch [1][1900/2575]\tlr_img_backbone: 2.000e-05 lr_pts: 2.000e-04, \
eta: 5 days, 11:59:01, time: 9.751, data_time: 0.871, memory: 24562, loss: 15.5012, grad_norm: 27.0
"""
