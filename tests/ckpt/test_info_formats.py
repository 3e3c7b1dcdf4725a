"""Info files of both converters (issue 13): the original BEVFusion's `create_data` (boxes (w, l, h, -yaw - pi/2)),
mmdet3d 1.0's and mmdet3d 1.1+'s `data_list` format are detected and read into the same infos, so training on any
of them gives the targets the tables give. Files are written here, in each converter's field names, from the
shared synthetic dataset's infos (read from the tables by the devkit)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nuscenes")

from model.data import infos as infos_mod  # noqa: E402
from model.data.geometry import rigid_inv  # noqa: E402
from tests.helpers.synth_data import small_dataset  # noqa: E402

VERSION, SPLIT = "v1.0-mini", "mini_train"


def _quat(m: np.ndarray) -> list[float]:
    from pyquaternion import Quaternion

    return list(Quaternion(matrix=m[:3, :3], atol=1e-6).elements)


def _v1_item(info: dict, original: bool) -> dict:
    boxes = info["gt_boxes"]
    if original:  # tools/data_converter/nuscenes_converter.py: np.concatenate([locs, dims(wlh), -rots - pi/2])
        boxes = np.concatenate([boxes[:, :3], boxes[:, [4, 3, 5]], -boxes[:, 6:7] - np.pi / 2], 1)
    item = {
        "lidar_path": "./data/nuscenes/" + info["lidar_path"].split("nuscenes/", 1)[1], "token": info["token"],
        "sweeps": [{"data_path": sw["path"], "sensor2lidar_rotation": sw["sensor2lidar"][:3, :3],
                    "sensor2lidar_translation": sw["sensor2lidar"][:3, 3], "timestamp": sw["timestamp"]}
                   for sw in info["sweeps"]],
        "cams": {cam: {"data_path": c["path"], "cam_intrinsic": c["intrinsics"],
                       "sensor2ego_rotation": _quat(c["camera2ego"]), "sensor2ego_translation": c["camera2ego"][:3, 3],
                       "sensor2lidar_rotation": c["camera2lidar"][:3, :3],
                       "sensor2lidar_translation": c["camera2lidar"][:3, 3]} for cam, c in info["cams"].items()},
        "lidar2ego_translation": info["lidar2ego"][:3, 3].tolist(), "lidar2ego_rotation": _quat(info["lidar2ego"]),
        "ego2global_translation": info["ego2global"][:3, 3].tolist(), "ego2global_rotation": _quat(info["ego2global"]),
        "timestamp": info["timestamp"], "gt_boxes": boxes, "gt_names": np.array(list(info["gt_names"])),
        "gt_velocity": info["gt_velocity"], "num_lidar_pts": info["num_lidar_pts"],
        "num_radar_pts": np.zeros_like(info["num_lidar_pts"]), "valid_flag": info["valid_flag"],
    }
    item.update({"radars": {}, "prev_token": ""} if original else {"num_features": 5})
    return item


def _v2_item(i: int, info: dict, classes: list[str]) -> dict:
    """tools/dataset_converters/update_infos_to_v2.py (update_nuscenes_infos)."""
    f32 = lambda m: np.asarray(m, np.float32).tolist()  # noqa: E731
    return {
        "sample_idx": i, "token": info["token"], "timestamp": info["timestamp"] / 1e6,
        "ego2global": info["ego2global"].tolist(),
        "lidar_points": {"num_pts_feats": 5, "lidar_path": Path(info["lidar_path"]).name,
                         "lidar2ego": info["lidar2ego"].tolist()},
        "lidar_sweeps": [{"lidar_points": {"lidar2sensor": f32(rigid_inv(sw["sensor2lidar"])), "lidar_path": sw["path"]},
                          "timestamp": sw["timestamp"] / 1e6} for sw in info["sweeps"]],
        "images": {cam: {"img_path": Path(c["path"]).name, "cam2img": c["intrinsics"].tolist(),
                         "cam2ego": c["camera2ego"].tolist(), "lidar2cam": f32(rigid_inv(c["camera2lidar"]))}
                   for cam, c in info["cams"].items()},
        "instances": [{"bbox_3d": box.tolist(), "bbox_label": classes.index(n) if n in classes else -1,
                       "bbox_label_3d": classes.index(n) if n in classes else -1, "velocity": v.tolist(),
                       "num_lidar_pts": int(k), "bbox_3d_isvalid": bool(ok)}
                      for box, n, v, k, ok in zip(info["gt_boxes"], info["gt_names"], info["gt_velocity"],
                                                  info["num_lidar_pts"], info["valid_flag"])],
    }


@pytest.fixture(scope="module")
def written():
    root = small_dataset()
    infos = infos_mod.infos_from_devkit(infos_mod.load_nuscenes(root, VERSION), SPLIT, 1)
    out = root / "ckpt-test-infos"
    out.mkdir(exist_ok=True)
    classes = list(infos_mod.MMDET3D_CLASSES)
    files = {
        "mit-han-lab": {"infos": [_v1_item(i, True) for i in infos], "metadata": {"version": VERSION}},
        "mmdet3d-1.0": {"infos": [_v1_item(i, False) for i in infos], "metadata": {"version": VERSION}},
        "mmdet3d-1.1": {"metainfo": {"categories": {c: k for k, c in enumerate(classes)}, "dataset": "nuscenes",
                                     "version": VERSION, "info_version": "1.1"},
                        "data_list": [_v2_item(k, i, classes) for k, i in enumerate(infos)]},
    }
    paths = {}
    for name, data in files.items():
        paths[name] = out / f"{name}.pkl"
        paths[name].write_bytes(pickle.dumps(data, protocol=4))
    return root, infos, paths


@pytest.mark.parametrize("name", ["mit-han-lab", "mmdet3d-1.0", "mmdet3d-1.1"])
def test_format_is_detected(name, written):
    _, _, paths = written
    with open(paths[name], "rb") as fh:
        assert infos_mod.info_format(pickle.load(fh)) == name


@pytest.mark.parametrize("name", ["mit-han-lab", "mmdet3d-1.0", "mmdet3d-1.1"])
def test_boxes_come_out_in_one_layout(name, written):
    root, ref, paths = written
    got = infos_mod.infos_from_pkl(paths[name], root)
    assert [i["token"] for i in got] == [i["token"] for i in ref]
    for a, b in zip(got, ref):
        keep = np.array([n in infos_mod.MMDET3D_CLASSES for n in b["gt_names"]])
        assert np.allclose(a["gt_boxes"][keep, :6], b["gt_boxes"][keep, :6], atol=1e-9)
        dyaw = (a["gt_boxes"][:, 6] - b["gt_boxes"][:, 6] + np.pi) % (2 * np.pi) - np.pi
        assert np.abs(dyaw).max(initial=0) < 1e-9
        assert list(a["gt_names"][keep]) == list(b["gt_names"][keep])
        assert a["lidar_path"] == b["lidar_path"] and a["timestamp"] == b["timestamp"]
        assert [c["path"] for c in a["cams"].values()] == [c["path"] for c in b["cams"].values()]


def test_training_targets_are_identical(written):
    from model.config import get_config
    from model.data.nuscenes_dataset import NuScenesDataset
    from model.heads.box_coder import TransFusionBBoxCoder

    root, _, paths = written
    cfg = get_config("tiny")
    kw = dict(sweeps=1, point_cloud_range=cfg.point_cloud_range, image_size=cfg.image_size, map_classes=(),
              train=True, seed=3)
    tables = NuScenesDataset(root, VERSION, SPLIT, **kw)
    coder = TransFusionBBoxCoder(cfg.point_cloud_range, 8, cfg.voxel_size)
    for name, path in paths.items():
        ds = NuScenesDataset(root, VERSION, SPLIT, info_pkl=str(path), **kw)
        assert len(ds) == len(tables)
        for index in range(len(ds)):
            a, b = ds.item(index), tables.item(index)
            assert torch.equal(a["gt_labels"], b["gt_labels"]), name
            assert a["gt_boxes"].shape[0] > 0
            assert torch.allclose(coder.encode(a["gt_boxes"]), coder.encode(b["gt_boxes"]), atol=1e-4), name
            assert torch.allclose(a["points"], b["points"], atol=1e-3), name
            assert torch.allclose(a["lidar2image"], b["lidar2image"], atol=1e-3), name


def test_the_originals_box_converted_and_read_naively():
    """The bug: the original's (w, l, h, -yaw - pi/2) read as (l, w, h, yaw) is the box with its heading mirrored.
    (The synthetic boxes are axis-aligned, where a mirror changes nothing, so a hand-made heading of 0.5 rad.)"""
    from model.heads.iou3d import box_iou_3d

    true = np.array([[10.0, 5.0, -1.0, 4.5, 1.9, 1.6, 0.5]])
    stored = np.array([[10.0, 5.0, -1.0, 1.9, 4.5, 1.6, -0.5 - np.pi / 2]])  # what create_data writes
    assert np.allclose(infos_mod._boxes_from_original(stored), true)
    naive = box_iou_3d(torch.from_numpy(stored), torch.from_numpy(true))
    assert naive.item() < 0.5
