"""Per-sample "infos": everything the loader needs about one key frame, from the devkit or from mmdet3d-style .pkl.

An info is a plain dict (picklable, cheap to send to DataLoader workers):
`token, scene_token, scene, timestamp (µs), location, lidar_path, lidar2ego, ego2global (4×4),
sweeps: [{path, sensor2lidar (4×4), timestamp}], cams: {name: {path, intrinsics (3×3), camera2ego, camera2lidar}},
gt_boxes [M, 7] (x, y, z, l, w, h, yaw in the key frame's LiDAR frame), gt_names [M] (detection class or the raw
category when it has none), gt_velocity [M, 2] (LiDAR frame), num_lidar_pts [M], valid_flag [M]`.

Info `.pkl` files of the original BEVFusion's converter (boxes as w, l, h, -yaw - pi/2), of mmdet3d 1.0's and of
mmdet3d 1.1+'s (`data_list`) are told apart by their fields and converted to that layout (`info_format`).

Data roots are checked before the devkit sees them, so a wrong path or version fails with one line and a fix
instead of an assertion deep inside nuscenes-devkit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
from pathlib import Path

import numpy as np

from bevctl.errors import UsageError
from model.data.geometry import quats_to_rots, rigid_inv, transform
from model.data.rig import CAMERAS

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")
SPLITS_BY_VERSION = {
    "v1.0-mini": ("mini_train", "mini_val"),
    "v1.0-trainval": ("train", "val", "train_detect", "train_track"),
    "v1.0-test": ("test",),
}


def _synth_fix(root: Path) -> str:
    return f"run `bevctl data synth --out {root}` for a synthetic dataset, or set data.root to your nuScenes folder"


def check_root_exists(root) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise UsageError(f"data root {root} does not exist", fix=_synth_fix(root))
    if not root.is_dir():
        raise UsageError(f"data root {root} is not a folder", fix=_synth_fix(root))
    return root


def check_root(root, version: str) -> Path:
    """Fail with one clear line unless `root/version` holds the nuScenes tables."""
    root = check_root_exists(root)
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0-"))
    if not (root / version).is_dir():
        if found:
            raise UsageError(f"data root {root} has no {version} tables (found: {', '.join(found)})",
                             fix=f"set data.version to {found[0]} (--set data.version={found[0]})")
        raise UsageError(f"{root} is not a nuScenes data root (no v1.0-*/ table folder)", fix=_synth_fix(root))
    missing = [t for t in TABLES if not (root / version / f"{t}.json").is_file()]
    if missing:
        raise UsageError(f"{root / version} is incomplete: missing {', '.join(m + '.json' for m in missing)}",
                         fix="re-extract the nuScenes metadata archive there")
    return root


def check_split(version: str, split: str) -> None:
    allowed = SPLITS_BY_VERSION.get(version)
    if allowed is not None and split not in allowed:
        raise UsageError(f"split {split!r} is not part of {version}",
                         fix=f"use one of {', '.join(allowed)} (data.train_split / data.val_split)")


def load_nuscenes(root, version: str):
    """The devkit's NuScenes, with its failures turned into one line."""
    root = check_root(root, version)
    from nuscenes import NuScenes

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the devkit prints even with verbose=False
            return NuScenes(version=version, dataroot=str(root), verbose=False)
    except Exception as exc:  # noqa: BLE001 - the devkit asserts, KeyErrors or fails to decode on broken trees
        raise UsageError(f"nuscenes-devkit cannot read {root / version}: {type(exc).__name__}: {exc}".splitlines()[0],
                         fix="check the download is complete (tables, samples/, sweeps/, maps/)") from None


def infos_from_devkit(nusc, split: str, sweeps: int) -> list[dict]:
    """Infos of every key frame in the scenes of `split` (a devkit split name), in scene/time order."""
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.splits import create_splits_scenes

    check_split(nusc.version, split)
    names = set(create_splits_scenes()[split])
    scenes = [s for s in nusc.scene if s["name"] in names]
    if not scenes:
        raise UsageError(f"no scene of split {split!r} is in {Path(nusc.dataroot) / nusc.version}",
                         fix="check data.version and the split names")
    root = Path(nusc.dataroot)
    infos = []
    for scene in scenes:
        location = nusc.get("log", scene["log_token"])["location"]
        token = scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            infos.append(_sample_info(nusc, root, sample, scene, location, sweeps, category_to_detection_name))
            token = sample["next"]
    return infos


def _pose(nusc, sd) -> tuple[np.ndarray, np.ndarray]:
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    ep = nusc.get("ego_pose", sd["ego_pose_token"])
    return transform(cs["rotation"], cs["translation"]), transform(ep["rotation"], ep["translation"])


def _sample_info(nusc, root: Path, sample, scene, location, sweeps: int, to_detection) -> dict:
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    lidar2ego, ego2global = _pose(nusc, lidar_sd)
    global2lidar = rigid_inv(ego2global @ lidar2ego)
    info = {
        "token": sample["token"], "scene_token": scene["token"], "scene": scene["name"],
        "timestamp": sample["timestamp"], "location": location, "lidar_path": str(root / lidar_sd["filename"]),
        "lidar2ego": lidar2ego, "ego2global": ego2global, "sweeps": [], "cams": {},
    }
    sd = lidar_sd
    while len(info["sweeps"]) < sweeps and sd["prev"]:
        sd = nusc.get("sample_data", sd["prev"])
        s2e, e2g = _pose(nusc, sd)
        info["sweeps"].append({"path": str(root / sd["filename"]), "sensor2lidar": global2lidar @ e2g @ s2e,
                               "timestamp": sd["timestamp"]})
    for cam in CAMERAS:
        cam_sd = nusc.get("sample_data", sample["data"][cam])
        c2e, e2g = _pose(nusc, cam_sd)
        cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
        info["cams"][cam] = {"path": str(root / cam_sd["filename"]), "intrinsics": np.asarray(cs["camera_intrinsic"]),
                             "camera2ego": c2e, "camera2lidar": global2lidar @ e2g @ c2e}
    anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
    # Vectorised over the sample's annotations: on v1.0-trainval this loop runs for about a million boxes.
    g_r, g_t = global2lidar[:3, :3], global2lidar[:3, 3]
    centres = np.array([a["translation"] for a in anns], dtype=np.float64).reshape(-1, 3) @ g_r.T + g_t
    rots = g_r @ quats_to_rots([a["rotation"] for a in anns])
    wlh = np.array([a["size"] for a in anns], dtype=np.float64).reshape(-1, 3)
    yaw = np.arctan2(rots[:, 1, 0], rots[:, 0, 0])
    info["gt_boxes"] = np.concatenate([centres, wlh[:, [1, 0, 2]], yaw[:, None]], 1).reshape(-1, 7)
    vel = np.array([nusc.box_velocity(a["token"]) for a in anns], dtype=np.float64).reshape(-1, 3)
    vel[~np.isfinite(vel)] = 0.0
    info["gt_velocity"] = (vel @ g_r.T)[:, :2]
    info["gt_names"] = np.array([to_detection(a["category_name"]) or a["category_name"] for a in anns], dtype=object)
    info["num_lidar_pts"] = np.array([a["num_lidar_pts"] for a in anns], dtype=np.int64)
    info["valid_flag"] = np.array([a["num_lidar_pts"] + a["num_radar_pts"] > 0 for a in anns], dtype=bool)
    return info


# ------------------------------------------------------------------------------------------------ .pkl infos


class _InfoUnpickler(pickle.Unpickler):
    """Only what mmdet3d's nuScenes info files contain: containers, numpy arrays and scalars."""

    ALLOWED = {
        ("collections", "OrderedDict"), ("collections", "defaultdict"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "set"), ("builtins", "frozenset"),
        ("builtins", "tuple"), ("builtins", "list"), ("builtins", "dict"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an info file")


def _rotation(value) -> np.ndarray:
    r = np.asarray(value, dtype=np.float64)
    return r if r.shape == (3, 3) else transform(r, [0, 0, 0])[:3, :3]


# mmdet3d 1.x (info_version 1.1) class order, used when a file's metainfo lacks its categories.
MMDET3D_CLASSES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle", "pedestrian",
                   "traffic_cone", "barrier")


def info_format(data) -> str:
    """Which converter wrote an info file, from its container and field names:

    - `mmdet3d-1.1`: mmdet3d >= 1.1 (`update_infos_to_v2`): `{"metainfo": {"info_version": ...}, "data_list"}`,
      boxes in `instances[i]["bbox_3d"]` as (centre, l, w, h, yaw);
    - `mit-han-lab`: the original BEVFusion's `create_data` (`{"infos", "metadata"}`; its infos, and only its,
      carry `radars` and `prev_token`), boxes (centre, w, l, h, -yaw - pi/2);
    - `mmdet3d-1.0`: mmdet3d 1.0's converter (`{"infos", "metadata"}`, infos carry `num_features`), boxes
      (centre, l, w, h, yaw). Other `{"infos": ...}` files are read this way too."""
    if isinstance(data, dict) and isinstance(data.get("data_list"), list):
        return "mmdet3d-1.1"
    infos = data.get("infos") if isinstance(data, dict) else None
    if not isinstance(infos, list):
        return "unknown"
    first = infos[0] if infos and isinstance(infos[0], dict) else {}
    return "mit-han-lab" if "radars" in first or "prev_token" in first else "mmdet3d-1.0"


def _boxes_from_original(boxes: np.ndarray) -> np.ndarray:
    """(x, y, z, w, l, h, -yaw - pi/2) -> (x, y, z, l, w, h, yaw); z is the devkit's centre in both."""
    out = boxes[:, [0, 1, 2, 4, 3, 5, 6]].copy()
    out[:, 6] = -boxes[:, 6] - np.pi / 2
    out[:, 6] = (out[:, 6] + np.pi) % (2 * np.pi) - np.pi
    return out


def _read_pkl(path, root):
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = Path(root) / path
    if not path.is_file():
        raise UsageError(f"info file {path} not found", fix="set data.info_pkl to a file in your data root, or leave it empty to read the tables")
    # Info files are pickles: only those inside the user's own data root are opened at all.
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise UsageError(f"info file {path} is outside the data root {root}; pickles are read only from there",
                         fix="move the .pkl into the data root (or leave data.info_pkl empty to read the tables)")
    logging.getLogger("bevctl").info(
        "reading %s with a restricted unpickler (numpy arrays and plain containers only)", path)
    try:
        with open(path, "rb") as fh:
            return path, _InfoUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path} is not a readable nuScenes info file: {exc}",
                         fix="regenerate it with BEVFusion's tools/create_data.py, or leave data.info_pkl empty") from None


def infos_from_pkl(path, root) -> list[dict]:
    """Read nuScenes infos written by the original BEVFusion's, mmdet3d 1.0's or mmdet3d 1.1+'s converter (see
    `info_format`) with a restricted unpickler; boxes come out in this module's layout whatever the converter.

    Only files from the user's own data root are read, and only numpy arrays and plain containers are accepted.
    """
    path, data = _read_pkl(path, root)
    kind = info_format(data)
    if kind == "unknown":
        raise UsageError(f"{path} has no 'infos' or 'data_list' list", fix="use nuscenes_infos_train.pkl / _val.pkl from create_data")
    logging.getLogger("bevctl").info("%s: info format %s", path, kind)
    root = Path(root)

    def local(p: str, folder: str = "") -> str:
        # Infos store paths as written at conversion time (e.g. ./data/nuscenes/samples/...), mmdet3d 1.1 only
        # the file name: re-anchor at root.
        p = str(p)
        for marker in ("samples/", "sweeps/"):
            if marker in p:
                return str(root / (marker + p.split(marker, 1)[1]))
        return str(root / folder / p) if folder and "/" not in p else str(root / p)

    if kind == "mmdet3d-1.1":
        return [_info_from_v2(item, data.get("metainfo") or {}, local) for item in data["data_list"]]
    out = []
    for item in data["infos"]:
        info = _info_from_v1(item, local)
        if kind == "mit-han-lab":
            info["gt_boxes"] = _boxes_from_original(info["gt_boxes"])
        out.append(info)
    return out


def _info_from_v1(item: dict, local) -> dict:
    l2e = transform(_rotation(item["lidar2ego_rotation"]), item["lidar2ego_translation"])
    e2g = transform(_rotation(item["ego2global_rotation"]), item["ego2global_translation"])
    info = {
        "token": item["token"], "scene_token": item.get("scene_token", ""), "scene": item.get("scene_name", ""),
        "timestamp": int(item["timestamp"]), "location": item.get("location"), "lidar_path": local(item["lidar_path"]),
        "lidar2ego": l2e, "ego2global": e2g, "sweeps": [], "cams": {},
    }
    for sw in item.get("sweeps", []):
        info["sweeps"].append({"path": local(sw["data_path"]),
                               "sensor2lidar": transform(_rotation(sw["sensor2lidar_rotation"]), sw["sensor2lidar_translation"]),
                               "timestamp": int(sw["timestamp"])})
    for cam in CAMERAS:
        c = item["cams"][cam]
        intr = c.get("cam_intrinsic", c.get("camera_intrinsics"))
        info["cams"][cam] = {"path": local(c["data_path"]), "intrinsics": np.asarray(intr)[:3, :3],
                             "camera2ego": transform(_rotation(c["sensor2ego_rotation"]), c["sensor2ego_translation"]),
                             "camera2lidar": transform(_rotation(c["sensor2lidar_rotation"]), c["sensor2lidar_translation"])}
    boxes = np.asarray(item.get("gt_boxes", np.zeros((0, 7))), dtype=np.float64).reshape(-1, 7)
    info["gt_boxes"] = boxes
    info["gt_names"] = np.asarray(item.get("gt_names", []), dtype=object)
    info["gt_velocity"] = np.nan_to_num(np.asarray(item.get("gt_velocity", np.zeros((len(boxes), 2))), dtype=np.float64)).reshape(-1, 2)
    n_lidar = np.asarray(item.get("num_lidar_pts", np.ones(len(boxes))), dtype=np.int64)
    info["num_lidar_pts"] = n_lidar
    info["valid_flag"] = np.asarray(item.get("valid_flag", n_lidar > 0), dtype=bool)
    return info


def _info_from_v2(item: dict, metainfo: dict, local) -> dict:
    """One mmdet3d 1.1+ `data_list` entry: 4x4 matrices, seconds, file names, per-instance dicts."""
    m = lambda value: np.asarray(value, dtype=np.float64).reshape(4, 4)  # noqa: E731
    lidar = item["lidar_points"]
    us = lambda seconds: int(round(float(seconds) * 1e6))  # noqa: E731
    info = {
        "token": item["token"], "scene_token": item.get("scene_token", ""), "scene": item.get("scene_name", ""),
        "timestamp": us(item["timestamp"]), "location": item.get("location"),
        "lidar_path": local(lidar["lidar_path"], "samples/LIDAR_TOP"), "lidar2ego": m(lidar["lidar2ego"]),
        "ego2global": m(item["ego2global"]), "sweeps": [], "cams": {},
    }
    for sw in item.get("lidar_sweeps", []):
        info["sweeps"].append({"path": local(sw["lidar_points"]["lidar_path"], "sweeps/LIDAR_TOP"),
                               "sensor2lidar": rigid_inv(m(sw["lidar_points"]["lidar2sensor"])),
                               "timestamp": us(sw["timestamp"])})
    for cam in CAMERAS:
        c = item["images"][cam]
        info["cams"][cam] = {"path": local(c["img_path"], f"samples/{cam}"),
                             "intrinsics": np.asarray(c["cam2img"], dtype=np.float64)[:3, :3],
                             "camera2ego": m(c["cam2ego"]), "camera2lidar": rigid_inv(m(c["lidar2cam"]))}
    names_by_label = {int(v): str(k) for k, v in (metainfo.get("categories") or {}).items() if int(v) >= 0}
    names_by_label = names_by_label or dict(enumerate(MMDET3D_CLASSES))
    instances = item.get("instances", [])
    info["gt_boxes"] = np.asarray([i["bbox_3d"] for i in instances], dtype=np.float64).reshape(-1, 7)
    info["gt_names"] = np.asarray([names_by_label.get(int(i.get("bbox_label_3d", i.get("bbox_label", -1))), "ignore")
                                   for i in instances], dtype=object)
    info["gt_velocity"] = np.nan_to_num(np.asarray([i.get("velocity", [0.0, 0.0]) for i in instances],
                                                   dtype=np.float64)).reshape(-1, 2)
    info["num_lidar_pts"] = np.asarray([i.get("num_lidar_pts", 1) for i in instances], dtype=np.int64)
    info["valid_flag"] = np.asarray([i.get("bbox_3d_isvalid", n > 0) for i, n in zip(instances, info["num_lidar_pts"])],
                                    dtype=bool)
    return info


def attach_scene_and_location(infos: list[dict], nusc) -> None:
    """Fill scene names and map locations that older info files lack (needed for the BEV map masks)."""
    for info in infos:
        if info.get("location") and info.get("scene"):
            continue
        sample = nusc.get("sample", info["token"])
        scene = nusc.get("scene", sample["scene_token"])
        info["scene_token"] = scene["token"]
        info["scene"] = scene["name"]
        info["location"] = nusc.get("log", scene["log_token"])["location"]
