"""Evaluation on the val split: nuScenes detection metrics (the devkit's official `DetectionEval`) and BEV map IoU.

Called by the trainer every `train.eval_interval` epochs (`evaluate(model, loader, info, phase=, run_dir=)`), and
on demand:
`python -m model.evaluate --run-dir DIR [--checkpoint X] [--json]` (default checkpoint: DIR/latest.pth).

Metric keys are BEVFusion's: `object/map`, `object/nds`, `object/<cls>_ap_dist_<d>`, `object/<cls>_<err>`,
`object/mATE` ...; `map/<cls>/iou@<t>` for t in 0.35 ... 0.65, `map/<cls>/iou@max`, `map/mean/iou@max`.
Each rank evaluates its shard; rank 0 gathers, runs the devkit and returns the metrics (others get {}).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bevctl import runs
from bevctl.errors import BevctlError, UsageError
from model import distributed as dist_utils
from model.data.batch import to_device
from model.distributed import DistInfo

MAP_THRESHOLDS = (0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65)
DETECTION_CONFIG = "detection_cvpr_2019"
MAX_BOXES_PER_SAMPLE = 500  # the devkit rejects result files with more
ERR_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}
# The devkit scores attributes; like mmdet3d, derive one from the class and the predicted speed.
MOVING_ATTR = {
    "car": "vehicle.moving", "truck": "vehicle.moving", "bus": "vehicle.moving", "trailer": "vehicle.moving",
    "construction_vehicle": "vehicle.moving", "bicycle": "cycle.with_rider", "motorcycle": "cycle.with_rider",
    "pedestrian": "pedestrian.moving",
}
STILL_ATTR = {
    "car": "vehicle.parked", "truck": "vehicle.parked", "bus": "vehicle.stopped", "trailer": "vehicle.parked",
    "construction_vehicle": "vehicle.parked", "bicycle": "cycle.without_rider", "motorcycle": "cycle.without_rider",
    "pedestrian": "pedestrian.standing",
}


# --------------------------------------------------------------------------------------------- detection


def boxes_to_global(boxes: np.ndarray, lidar_aug: np.ndarray, lidar2ego: np.ndarray, ego2global: np.ndarray) -> list[dict]:
    """[K, 9] boxes (x, y, z, l, w, h, yaw, vx, vy) in the augmented LiDAR frame -> nuScenes global boxes."""
    from pyquaternion import Quaternion

    to_global = ego2global @ lidar2ego @ np.linalg.inv(lidar_aug)
    rot = to_global[:3, :3]
    scale = abs(np.linalg.det(rot)) ** (1 / 3)  # a scale augmentation, undone on sizes
    out = []
    for x, y, z, l, w, h, yaw, vx, vy in boxes.astype(np.float64):
        centre = rot @ np.array([x, y, z]) + to_global[:3, 3]
        heading = rot @ np.array([math.cos(yaw), math.sin(yaw), 0.0])
        velocity = rot @ np.array([vx, vy, 0.0])
        yaw_g = math.atan2(heading[1], heading[0])
        out.append(
            {
                "translation": centre.tolist(),
                "size": [w * scale, l * scale, h * scale],  # nuScenes orders sizes w, l, h
                "rotation": Quaternion(axis=[0, 0, 1], radians=yaw_g).elements.tolist(),
                "velocity": velocity[:2].tolist(),
            }
        )
    return out


def detection_results(output: dict, meta: dict, lidar_aug: np.ndarray, classes: list[str]) -> list[dict]:
    boxes = output["boxes_3d"].detach().float().cpu().numpy().reshape(-1, 9)
    scores = output["scores_3d"].detach().float().cpu().numpy().reshape(-1)
    labels = output["labels_3d"].detach().cpu().numpy().reshape(-1)
    order = np.argsort(-scores, kind="stable")[:MAX_BOXES_PER_SAMPLE]
    converted = boxes_to_global(
        boxes[order], lidar_aug, np.asarray(meta["lidar2ego"], dtype=np.float64), np.asarray(meta["ego2global"], dtype=np.float64)
    )
    results = []
    for box, score, label in zip(converted, scores[order], labels[order]):
        name = classes[int(label)]
        moving = math.hypot(*box["velocity"]) > 0.2
        attr = (MOVING_ATTR if moving else STILL_ATTR).get(name, "")
        results.append(
            {"sample_token": meta["token"], **box, "detection_name": name, "detection_score": float(score), "attribute_name": attr}
        )
    return results


_NUSC_CACHE: dict[tuple[str, str], Any] = {}


def nuscenes_db(version: str, root: str, dataset=None):
    """The devkit's NuScenes object: the dataset's own when it has one, else loaded once per process."""
    nusc = getattr(dataset, "nusc", None)
    if nusc is not None:
        return nusc
    key = (version, str(root))
    if key not in _NUSC_CACHE:
        from nuscenes import NuScenes

        _NUSC_CACHE[key] = NuScenes(version=version, dataroot=str(root), verbose=False)
    return _NUSC_CACHE[key]


def run_detection_eval(results: dict[str, list], nusc, eval_set: str, out_dir: Path) -> dict[str, float]:
    """Write the nuScenes result JSON and score it with the official DetectionEval (detection_cvpr_2019)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / "results_nusc.json"
    payload = {
        "meta": {"use_camera": True, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False},
        "results": results,
    }
    result_path.write_text(json.dumps(payload), encoding="utf-8")
    with contextlib.redirect_stderr(io.StringIO()):
        evaluator = DetectionEval(
            nusc, config=config_factory(DETECTION_CONFIG), result_path=str(result_path), eval_set=eval_set,
            output_dir=str(out_dir), verbose=False,
        )
    with contextlib.redirect_stderr(io.StringIO()):  # the devkit draws tqdm bars even when not verbose
        metrics, _ = evaluator.evaluate()
    summary = metrics.serialize()
    (out_dir / "metrics_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    out = {"object/map": summary["mean_ap"], "object/nds": summary["nd_score"]}
    for err, short in ERR_NAMES.items():
        out[f"object/{short}"] = summary["tp_errors"][err]
    for cls, aps in summary["label_aps"].items():
        for dist, ap in aps.items():
            out[f"object/{cls}_ap_dist_{float(dist)}"] = ap
    for cls, errs in summary["label_tp_errors"].items():
        for err, value in errs.items():
            out[f"object/{cls}_{err}"] = value
    return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------- map


def seg_counts(masks: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """[3, T, C] true positives, false positives, false negatives per threshold and class, for one sample."""
    thresholds = torch.tensor(MAP_THRESHOLDS, device=masks.device).view(-1, 1, 1, 1)
    pred = masks.float().unsqueeze(0) >= thresholds  # [T, C, X, Y]
    label = gt.bool().unsqueeze(0)
    tp = (pred & label).sum(dim=(2, 3))
    fp = (pred & ~label).sum(dim=(2, 3))
    fn = (~pred & label).sum(dim=(2, 3))
    return torch.stack([tp, fp, fn]).double().cpu()


def map_metrics(counts: torch.Tensor, classes: list[str]) -> dict[str, float]:
    tp, fp, fn = counts
    iou = tp / (tp + fp + fn + 1e-7)  # [T, C]
    out: dict[str, float] = {}
    for c, name in enumerate(classes):
        for t, threshold in enumerate(MAP_THRESHOLDS):
            out[f"map/{name}/iou@{threshold:.2f}"] = float(iou[t, c])
        out[f"map/{name}/iou@max"] = float(iou[:, c].max())
    out["map/mean/iou@max"] = float(iou.max(dim=0).values.mean())
    return out


# --------------------------------------------------------------------------------------------- the pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from bevctl.console import err

    progress = Progress(
        TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), console=err(), transient=True,
    )
    progress.start()
    progress.add_task("eval", total=total)
    return progress


@dataclass
class Evaluation:
    """Rank 0's result of a pass: the metrics, the number of batches, and the first validation sample's
    prediction and ground truth (`token`, `masks_bev`/`gt_masks_bev` [C, X, Y], `boxes_3d`/`gt_boxes` ...)."""

    metrics: dict[str, float]
    batches: int
    first_sample: dict[str, Any] = field(default_factory=dict)


def _first_sample(batch: dict, output: dict) -> dict[str, Any]:
    sample: dict[str, Any] = {"token": batch["metas"][0]["token"]}
    for key, value in output.items():
        sample[key] = value.detach().float().cpu() if key != "labels_3d" else value.detach().cpu()
    for key in ("gt_masks_bev", "gt_boxes", "gt_labels"):
        if key in batch:
            sample[key] = batch[key][0].detach().cpu()
    return sample


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    info: DistInfo,
    *,
    phase,
    run_dir: Path,
    should_stop: Callable[[], bool] | None = None,
    progress: bool | None = None,
) -> Evaluation | None:
    """Metrics of `model` on `loader`'s split (empty on ranks other than 0); None when a stop interrupted it."""
    cfg = getattr(model, "cfg", None)
    object_classes = list(getattr(cfg, "object_classes", []))
    map_classes = list(getattr(cfg, "map_classes", []))
    was_training = model.training
    model.eval()
    results: dict[str, list] = {}
    counts = torch.zeros(3, len(MAP_THRESHOLDS), len(map_classes), dtype=torch.float64)
    has_map = False
    first: dict[str, Any] = {}
    if progress is None:
        progress = info.is_main and sys.stderr.isatty()
    bar = _progress(len(loader), progress)
    try:
        for batch in loader:
            if should_stop is not None and should_stop():
                return None
            metas = batch["metas"]
            aug = batch["lidar_aug_matrix"].double().cpu().numpy()
            gt_masks = batch.get("gt_masks_bev")
            batch = to_device(batch, info.device)
            outputs = model(batch)
            if not first and outputs:
                first = _first_sample({"metas": metas, **({"gt_masks_bev": gt_masks} if gt_masks is not None else {}),
                                       **{k: batch[k] for k in ("gt_boxes", "gt_labels") if k in batch}}, outputs[0])
            for b, output in enumerate(outputs):
                if "boxes_3d" in output:
                    results[metas[b]["token"]] = detection_results(output, metas[b], aug[b], object_classes)
                if "masks_bev" in output and gt_masks is not None:
                    has_map = True
                    counts += seg_counts(output["masks_bev"], gt_masks[b].to(output["masks_bev"].device))
            if bar is not None:
                bar.advance(bar.task_ids[0])
    finally:
        if bar is not None:
            bar.stop()
        model.train(was_training)

    gathered = dist_utils.gather_objects((results, counts, has_map), info)
    if not info.is_main:
        return Evaluation({}, len(loader))
    all_results: dict[str, list] = {}
    total = torch.zeros_like(counts)
    any_map = False
    for part_results, part_counts, part_map in gathered:
        all_results.update(part_results)  # the sampler pads with repeats; a token counts once
        total += part_counts
        any_map |= part_map
    metrics: dict[str, float] = {}
    if all_results:
        nusc = nuscenes_db(phase.data.version, phase.data.root, getattr(loader, "dataset", None))
        metrics.update(run_detection_eval(all_results, nusc, phase.data.val_split, Path(run_dir) / "eval"))
    if any_map:
        metrics.update(map_metrics(total, map_classes))
    return Evaluation(metrics, len(loader), first)


# --------------------------------------------------------------------------------------------- on demand


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description="Evaluate a run's checkpoint on its val split.")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--checkpoint", type=Path, help="default: RUN_DIR/latest.pth")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    try:
        result, epoch = _evaluate_checkpoint(args)
    except BevctlError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr, flush=True)
        return exc.code
    finally:
        dist_utils.cleanup()
    if result is None:
        return 0
    if args.json:
        from bevctl.console import print_json

        print_json({"schema": 1, "run_dir": str(args.run_dir), "epoch": epoch, "metrics": result.metrics})
    else:
        print(runs.format_val_line(epoch, result.batches, result.metrics))
    return 0


def _evaluate_checkpoint(args) -> tuple[Evaluation | None, int]:
    """The run's phase, model and val split built as the trainer builds them, with the checkpoint's weights."""
    from bevctl.phases import phase_from_dict
    from model import builders
    from model import checkpoint as ckpt

    manifest = runs.read_manifest(args.run_dir)
    if not manifest or not isinstance(manifest.get("config"), dict):
        raise UsageError(f"{args.run_dir / runs.MANIFEST} is missing or has no config", fix="give a run directory")
    phase = phase_from_dict(manifest["config"])
    path = args.checkpoint or args.run_dir / runs.LATEST
    info = dist_utils.init(args.device or phase.train.device)
    cfg = builders.model_config(phase)
    model = builders.build_model(phase, cfg)
    state = ckpt.load_file(path)
    report = ckpt.partial_load(model, ckpt.extract_state_dict(state), path=str(path), how="evaluate")
    if not report.ok:
        raise UsageError(report.failure(), fix="evaluate a checkpoint of this run's model")
    builders.prepare_data(phase, cfg, info)
    loader = builders.val_loader(builders.build_val_set(phase, cfg), phase, info)
    result = evaluate(model.to(info.device), loader, info, phase=phase, run_dir=args.run_dir)
    epoch = int(state.get("meta", {}).get("epoch", 0)) if isinstance(state.get("meta"), dict) else 0
    return (result if info.is_main else None), epoch


if __name__ == "__main__":
    sys.exit(main())
