"""The torch Dataset for nuScenes (real or synthetic): one key frame per item, as the batch contract describes.

Geometry comes from the model config (`point_cloud_range`, `image_size`, `map_bound`, class lists), the data from
the phase's `DataSpec` (`root`, `version`, split, `sweeps`, `info_pkl`). Tables are read once in the constructor
(through nuscenes-devkit, or from mmdet3d-style info files) into plain per-sample dicts, so workers get a light
copy; map expansions are opened lazily in each worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bevctl.errors import UsageError
from model.data import bev_map, infos as infos_mod
from model.data.geometry import rigid_inv
from model.data.transforms import AugConfig, apply_to_boxes, apply_to_points, global_aug, image_aug, to_4x4

OBJECT_CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
                  "pedestrian", "traffic_cone")
MAP_CLASSES = ("drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider")
_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


# `data.augment` field -> `AugConfig` field; the defaults live in AugConfig (and, equal, in AugmentSpec) only.
_AUGMENT_FIELDS = {"global_rot": "global_rot", "global_scale": "global_scale",
                   "global_translate_std": "global_translate_std", "image_rot_deg": "rot_lim_deg",
                   "image_flip": "image_flip"}


def aug_config(spec: Optional[dict]) -> AugConfig:
    """The phase's `data.augment` (a dict of `bevctl.phases.AugmentSpec`) as the transforms' `AugConfig`."""
    spec = spec or {}
    kw = {_AUGMENT_FIELDS[k]: tuple(v) if isinstance(v, (list, tuple)) else v
          for k, v in spec.items() if k in _AUGMENT_FIELDS}
    if "flip" in spec:
        kw["flip_x_prob"] = kw["flip_y_prob"] = 0.5 if spec["flip"] else 0.0
    return AugConfig(**kw)


class NuScenesDataset(Dataset):
    def __init__(
        self,
        root,
        version: str = "v1.0-trainval",
        split: str = "train",
        *,
        sweeps: int = 9,
        point_cloud_range: Sequence[float] = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0),
        image_size: Sequence[int] = (256, 704),
        map_bound=(-50.0, 50.0, 0.5),
        object_classes: Sequence[str] = OBJECT_CLASSES,
        map_classes: Sequence[str] = MAP_CLASSES,
        train: bool = True,
        info_pkl: Optional[str] = None,
        aug: Optional[AugConfig] = None,
        use_valid_flag: bool = False,
        seed: int = 0,
    ):
        # Info files carry their own calibration and boxes: the tables are then only needed for missing locations.
        self.root = infos_mod.check_root(root, version) if not info_pkl else infos_mod.check_root_exists(root)
        self.version, self.split = version, split
        self.sweeps = sweeps
        self.pc_range = np.asarray(point_cloud_range, dtype=np.float32)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.map_bound = map_bound
        self.object_classes = tuple(object_classes)
        self.map_classes = tuple(map_classes)
        self.train = train
        self.aug = aug or AugConfig()
        self.use_valid_flag = use_valid_flag
        self.seed = seed
        infos_mod.check_split(version, split)
        if info_pkl:
            self.infos = infos_mod.infos_from_pkl(info_pkl, self.root)
            for info in self.infos:
                info["sweeps"] = info["sweeps"][:sweeps]
            if self.map_classes and any(not i.get("location") for i in self.infos):
                infos_mod.attach_scene_and_location(self.infos, infos_mod.load_nuscenes(self.root, version))
        else:
            nusc = infos_mod.load_nuscenes(self.root, version)
            self.infos = infos_mod.infos_from_devkit(nusc, split, sweeps)
            del nusc
        if not self.infos:
            raise UsageError(f"split {split!r} of {self.root / version} has no samples", fix="check data.version and the split")
        self._check_files(self.infos[0])
        if self.map_classes:
            for location in sorted({i["location"] for i in self.infos}):
                path = self.root / "maps" / "expansion" / f"{location}.json"
                if not path.is_file():
                    raise UsageError(f"map expansion {path} is missing (needed for the BEV map masks)",
                                     fix="download nuScenes-map-expansion-v1.3 into maps/expansion, or drop the map head")
        self._maps: dict = {}
        self.epoch = 0
        self._cv2_quiet = False

    @classmethod
    def from_config(cls, cfg, data, split: str, train: bool, **kw) -> "NuScenesDataset":
        """From a `model.config.ModelConfig` (geometry, classes) and a phase's `DataSpec` (or a dict of it)."""
        d = data if isinstance(data, dict) else data.model_dump()
        heads = getattr(cfg, "heads", ("object", "map"))
        return cls(
            d.get("root", "data/nuscenes"), d.get("version", "v1.0-trainval"), split,
            sweeps=d.get("sweeps", 9), point_cloud_range=cfg.point_cloud_range, image_size=cfg.image_size,
            map_bound=cfg.map_bound, object_classes=cfg.object_classes,
            map_classes=cfg.map_classes if "map" in heads else (), train=train, info_pkl=d.get("info_pkl"),
            aug=aug_config(d.get("augment")), **kw,
        )

    def _check_files(self, info: dict) -> None:
        for path in [info["lidar_path"]] + [c["path"] for c in info["cams"].values()]:
            if not Path(path).is_file():
                raise UsageError(f"sample file {path} is missing", fix="check the samples/ folder of the data root is complete")

    def __len__(self) -> int:
        return len(self.infos)

    # --------------------------------------------------------------------------------------------- loading

    def set_epoch(self, epoch: int) -> None:
        """Key this epoch's augmentation: a sample's draws are a pure function of (seed, epoch, index).

        Call it before creating the epoch's DataLoader iterator: workers copy the dataset (and its epoch) then, so
        persistent workers would keep drawing the epoch they started with. Eval items have no augmentation.
        """
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        # Independent of the process, the worker and what was loaded before: a stopped and resumed run draws the
        # same augmentations as an uninterrupted one, with any number of loader workers.
        return np.random.default_rng([self.seed % 2**64, self.epoch % 2**64, index])

    def _points(self, info: dict) -> np.ndarray:
        pts = np.fromfile(info["lidar_path"], dtype=np.float32).reshape(-1, 5)
        pts[:, 4] = 0.0
        clouds = [pts]
        for sw in info["sweeps"]:
            p = np.fromfile(sw["path"], dtype=np.float32).reshape(-1, 5)
            p = p[np.hypot(p[:, 0], p[:, 1]) > 1.0]  # the ego's own returns, as the original drops them
            m = sw["sensor2lidar"]
            p[:, :3] = p[:, :3] @ m[:3, :3].T.astype(np.float32) + m[:3, 3].astype(np.float32)
            p[:, 4] = (info["timestamp"] - sw["timestamp"]) / 1e6
            clouds.append(p)
        return np.concatenate(clouds, 0)

    def _images(self, info: dict, rng) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        if not self._cv2_quiet and torch.utils.data.get_worker_info() is not None:
            # Several loader workers on few cores: OpenCV's own thread pool per worker only adds contention.
            cv2.setNumThreads(1)
            self._cv2_quiet = True
        fH, fW = self.image_size
        imgs = np.empty((len(info["cams"]), 3, fH, fW), np.float32)
        augs = np.empty((len(info["cams"]), 4, 4), np.float32)
        # Decode at half or quarter size when the augmentation always shrinks at least that much (much faster).
        largest = (self.aug.resize_lim[1] if self.train else self.aug.resize_test) * fW / 704
        reduce = 4 if largest <= 0.25 else 2 if largest <= 0.5 else 1
        flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}[reduce]
        for n, cam in enumerate(info["cams"].values()):
            img = cv2.imread(cam["path"], flag)
            if img is None:
                raise UsageError(f"cannot read image {cam['path']}", fix="check the samples/ folder of the data root")
            h, w = img.shape[:2]
            aff = image_aug((h * reduce, w * reduce), self.image_size, self.aug, self.train, rng)
            src = aff @ np.diag([reduce, reduce, 1.0])  # reduced pixels → full-size pixels → augmented
            out = cv2.warpAffine(img, src[:2], (fW, fH), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
            out = (out[:, :, ::-1].astype(np.float32) - _MEAN) / _STD
            imgs[n] = out.transpose(2, 0, 1)
            augs[n] = to_4x4(aff)
        return imgs, augs

    def __getstate__(self):
        # Map indexes are rebuilt in each worker (spawned workers would otherwise pickle shapely trees).
        return {**self.__dict__, "_maps": {}}

    def _map_api(self, location: str):
        if location not in self._maps:
            from nuscenes.map_expansion.map_api import NuScenesMap

            self._maps[location] = bev_map.MapIndex(NuScenesMap(dataroot=str(self.root), map_name=location))
        return self._maps[location]

    def _kept(self, info: dict) -> np.ndarray:
        """Boxes of known classes, (optionally) only those with points, as the original's get_ann_info."""
        keep = np.array([n in self.object_classes for n in info["gt_names"]], dtype=bool)
        return keep & (info["valid_flag"] if self.use_valid_flag else info["num_lidar_pts"] > 0)

    def class_ids(self, index: int) -> set[int]:
        """The classes sample `index` shows (CBGS groups samples by them), without loading it."""
        info = self.infos[index]
        return {self.object_classes.index(n) for n in info["gt_names"][self._kept(info)]}

    def __getitem__(self, index: int) -> dict:
        return self.item(index)

    def item(self, index: int, aug_key: int | None = None) -> dict:
        """Sample `index`; its augmentation is drawn from (seed, epoch, aug_key or index)."""
        index = int(index)
        if index < 0:
            index += len(self.infos)  # ds[-1] draws as ds[len - 1]
        info = self.infos[index]
        rng = self._rng(index if aug_key is None else int(aug_key))
        points = self._points(info)
        imgs, img_aug = self._images(info, rng)

        names = info["gt_names"]
        keep = self._kept(info)
        boxes = info["gt_boxes"][keep]
        velocity = info["gt_velocity"][keep]
        labels = np.array([self.object_classes.index(n) for n in names[keep]], dtype=np.int64)

        lidar_aug = global_aug(self.aug, self.train, rng)
        points = apply_to_points(points, lidar_aug)
        boxes, velocity = apply_to_boxes(boxes, velocity, lidar_aug)
        r = self.pc_range
        inside = ((points[:, 0] >= r[0]) & (points[:, 0] < r[3]) & (points[:, 1] >= r[1]) & (points[:, 1] < r[4])
                  & (points[:, 2] >= r[2]) & (points[:, 2] < r[5]))
        points = points[inside]
        if self.train:
            points = points[rng.permutation(len(points))]
        in_bev = (boxes[:, 0] > r[0]) & (boxes[:, 1] > r[1]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] < r[4])
        boxes, velocity, labels = boxes[in_bev], velocity[in_bev], labels[in_bev]

        lidar2ego = info["lidar2ego"]
        lidar2global = info["ego2global"] @ lidar2ego
        if self.map_classes:
            masks = bev_map.rasterise(self._map_api(info["location"]), lidar2global, lidar_aug, self.map_bound,
                                      self.map_classes)
        else:
            masks = np.zeros((0, *bev_map.grid_shape(self.map_bound)), np.uint8)

        cams = list(info["cams"].values())
        intr = np.tile(np.eye(4), (len(cams), 1, 1))
        for n, c in enumerate(cams):
            intr[n, :3, :3] = c["intrinsics"]
        camera2lidar = np.stack([c["camera2lidar"] for c in cams])
        lidar2camera = rigid_inv(camera2lidar)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        return {
            "img": torch.from_numpy(imgs),
            "points": torch.from_numpy(np.ascontiguousarray(points)),
            "camera_intrinsics": f32(intr),
            "camera2lidar": f32(camera2lidar),
            "lidar2camera": f32(lidar2camera),
            "lidar2image": f32(intr @ lidar2camera),
            "camera2ego": f32(np.stack([c["camera2ego"] for c in cams])),
            "lidar2ego": f32(lidar2ego),
            "img_aug_matrix": torch.from_numpy(img_aug),
            "lidar_aug_matrix": f32(lidar_aug),
            "gt_boxes": f32(np.concatenate([boxes, velocity], 1).reshape(-1, 9)),
            "gt_labels": torch.from_numpy(labels),
            "gt_masks_bev": torch.from_numpy(masks.astype(np.float32)),
            "metas": {
                "token": info["token"], "scene": info["scene"], "scene_token": info["scene_token"],
                "timestamp": int(info["timestamp"]), "location": info["location"],
                "lidar2ego": lidar2ego.tolist(), "ego2global": info["ego2global"].tolist(),
            },
        }
