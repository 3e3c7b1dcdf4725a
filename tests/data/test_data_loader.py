"""The loader: the batch contract, augmentation consistency, BEV masks, info files and clear errors."""

import pickle

import numpy as np
import pytest

pytest.importorskip("nuscenes")
torch = pytest.importorskip("torch")

from bevctl.errors import UsageError  # noqa: E402
from tests.helpers.synth_data import small_dataset  # noqa: E402

IMAGE = (64, 176)
WIDE = (-200.0, -200.0, -50.0, 200.0, 200.0, 50.0)  # no range filtering: compare eval and train items box by box


def make(split="mini_train", train=False, **kw):
    from model.data.nuscenes_dataset import NuScenesDataset

    kw.setdefault("image_size", IMAGE)
    return NuScenesDataset(small_dataset(), "v1.0-mini", split, sweeps=1, train=train, **kw)


@pytest.fixture(scope="module")
def eval_ds():
    return make()


def test_batch_matches_the_contract(eval_ds):
    from model.data.loader import build_loader

    batch = next(iter(build_loader(eval_ds, batch_size=2, workers=0, shuffle=False)))
    B, N, (H, W) = 2, 6, IMAGE
    shapes = {
        "img": (B, N, 3, H, W), "camera_intrinsics": (B, N, 4, 4), "camera2lidar": (B, N, 4, 4),
        "lidar2camera": (B, N, 4, 4), "lidar2image": (B, N, 4, 4), "camera2ego": (B, N, 4, 4),
        "lidar2ego": (B, 4, 4), "img_aug_matrix": (B, N, 4, 4), "lidar_aug_matrix": (B, 4, 4),
        "gt_masks_bev": (B, 6, 200, 200),
    }
    assert set(batch) == set(shapes) | {"points", "gt_boxes", "gt_labels", "metas"}
    for key, shape in shapes.items():
        assert tuple(batch[key].shape) == shape, key
        assert batch[key].dtype == torch.float32, key
    for key in ("points", "gt_boxes", "gt_labels", "metas"):
        assert isinstance(batch[key], list) and len(batch[key]) == B
    for pts, boxes, labels in zip(batch["points"], batch["gt_boxes"], batch["gt_labels"]):
        assert pts.dtype == torch.float32 and pts.shape[1] == 5 and len(pts) > 1000
        assert boxes.dtype == torch.float32 and boxes.shape[1] == 9 and len(boxes) > 5
        assert labels.dtype == torch.long and labels.shape == (len(boxes),)
        assert 0 <= int(labels.min()) and int(labels.max()) < 10
        lags = pts[:, 4].unique().numpy()  # key frame and one sweep 50 ms earlier
        assert len(lags) == 2 and np.allclose(lags, [0.0, 0.05], atol=1e-4)
    assert torch.allclose(batch["lidar2image"], batch["camera_intrinsics"] @ batch["lidar2camera"], atol=1e-3)
    assert torch.allclose(batch["lidar2camera"] @ batch["camera2lidar"], torch.eye(4).expand(B, N, 4, 4), atol=1e-4)
    meta = batch["metas"][0]
    assert {"token", "scene", "timestamp", "lidar2ego", "ego2global"} <= set(meta)
    assert np.asarray(meta["ego2global"]).shape == (4, 4)
    # Eval: no 3D augmentation, images normalised (ImageNet statistics, not 0..255).
    assert torch.equal(batch["lidar_aug_matrix"][0], torch.eye(4))
    assert -3 < float(batch["img"].min()) and float(batch["img"].max()) < 3


def test_eval_is_deterministic(eval_ds):
    a, b = eval_ds[1], eval_ds[1]
    assert torch.equal(a["img"], b["img"]) and torch.equal(a["points"], b["points"])
    assert torch.equal(a["img_aug_matrix"], b["img_aug_matrix"])


def _counts(item, margin):
    from model.data.geometry import points_in_boxes

    return points_in_boxes(item["points"].numpy(), item["gt_boxes"][:, :7].numpy(), margin=margin).sum(0)


def test_3d_augmentation_keeps_points_in_their_boxes():
    from model.data.transforms import AugConfig

    plain = make(point_cloud_range=WIDE, map_classes=())
    flips = AugConfig(flip_x_prob=1.0, flip_y_prob=1.0)
    augmented = make(train=True, point_cloud_range=WIDE, map_classes=(), aug=flips, seed=1)
    for index in (0, 2):
        a, b = plain[index], augmented[index]
        assert not torch.allclose(b["lidar_aug_matrix"], torch.eye(4))
        assert torch.equal(a["gt_labels"], b["gt_labels"])
        # Points on a box face may flip in or out by float rounding: compare shrunk against grown boxes.
        assert (_counts(a, -0.02) > 0).sum() > 5
        assert (_counts(b, 0.02) >= _counts(a, -0.02)).all()
        assert (_counts(a, 0.02) >= _counts(b, -0.02)).all()
        # Boxes are the eval boxes moved by the recorded matrix.
        m = b["lidar_aug_matrix"].double().numpy()
        centres = a["gt_boxes"][:, :3].double().numpy() @ m[:3, :3].T + m[:3, 3]
        np.testing.assert_allclose(b["gt_boxes"][:, :3].numpy(), centres, atol=1e-3)
        scale = np.cbrt(np.linalg.det(m[:3, :3]))
        np.testing.assert_allclose(b["gt_boxes"][:, 3:6].numpy(), a["gt_boxes"][:, 3:6].numpy() * scale, rtol=1e-4)
        speed = np.linalg.norm(a["gt_boxes"][:, 7:9].numpy(), axis=1) * scale
        np.testing.assert_allclose(np.linalg.norm(b["gt_boxes"][:, 7:9].numpy(), axis=1), speed, atol=1e-3)


def _project(item, cam, xyz):
    """Augmented-LiDAR point → pixel of the augmented image, through the batch's matrices."""
    p = np.linalg.inv(item["lidar_aug_matrix"].double().numpy()) @ np.r_[xyz, 1.0]
    q = item["lidar2image"][cam].double().numpy() @ p
    uvd = np.r_[q[:2] / q[2], q[2], 1.0]
    return (item["img_aug_matrix"][cam].double().numpy() @ uvd)[:2], q[2]


def test_image_augmentation_matrix_matches_the_pixels():
    """A box centre seen in CAM_FRONT shows the same colour in the eval and the augmented image."""
    plain = make(point_cloud_range=WIDE, map_classes=(), image_size=(128, 352))
    augmented = make(train=True, point_cloud_range=WIDE, map_classes=(), image_size=(128, 352), seed=4)
    matched = 0
    for index in range(len(plain)):
        a, b = plain[index], augmented[index]
        for k in np.argsort(np.linalg.norm(a["gt_boxes"][:, :2].numpy(), axis=1)):
            if int(a["gt_labels"][k]) not in (0, 1, 3):  # large vehicles: robust to a pixel or two
                continue
            uv_a, da = _project(a, 0, a["gt_boxes"][k, :3].double().numpy())
            uv_b, db = _project(b, 0, b["gt_boxes"][k, :3].double().numpy())
            if da < 4 or not (4 <= uv_a[0] < 348 and 4 <= uv_a[1] < 124 and 4 <= uv_b[0] < 348 and 4 <= uv_b[1] < 124):
                continue
            pa = a["img"][0][:, int(uv_a[1]), int(uv_a[0])]
            pb = b["img"][0][:, int(uv_b[1]), int(uv_b[0])]
            assert torch.allclose(pa, pb, atol=0.6), (pa, pb)
            matched += 1
            break
    assert matched >= 2


def test_bev_masks_follow_the_ego_and_the_augmentation(eval_ds):
    from model.data.transforms import AugConfig

    item = eval_ds[0]
    masks = item["gt_masks_bev"]
    assert masks[0].mean() > 0.05  # drivable_area
    assert masks[5].sum() > 0  # divider
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    # The ego stands on the road: the cells around x = y = 0 are drivable.
    assert masks[0, 98:102, 98:102].all()
    aug = make(train=True, aug=AugConfig(global_translate_std=3.0), seed=2)[0]
    m = aug["lidar_aug_matrix"].numpy()
    ego = m[:2, 3]  # where the sensor origin went
    i, j = (int((ego[0] + 50) / 0.5), int((ego[1] + 50) / 0.5))
    assert aug["gt_masks_bev"][0, i - 1:i + 2, j - 1:j + 2].all()
    assert abs(float(aug["gt_masks_bev"][0].mean()) - float(masks[0].mean())) < 0.35
    # Moving vehicles drive in lanes: their centres land on drivable cells, with and without augmentation.
    for it in (item, aug, make(train=True, seed=7)[2]):
        boxes, labels = it["gt_boxes"].numpy(), it["gt_labels"].numpy()
        moving = boxes[(labels <= 4) & (np.linalg.norm(boxes[:, 7:9], axis=1) > 0.5)]
        i = ((moving[:, 0] + 50) / 0.5).astype(int)
        j = ((moving[:, 1] + 50) / 0.5).astype(int)
        inside = (i >= 0) & (i < 200) & (j >= 0) & (j < 200)
        assert inside.sum() >= 3
        assert it["gt_masks_bev"][0].numpy()[i[inside], j[inside]].mean() > 0.9


def test_boxes_are_filtered_to_classes_and_range():
    narrow = make(point_cloud_range=(-20.0, -20.0, -5.0, 20.0, 20.0, 3.0), object_classes=("car",), map_classes=())
    item = narrow[0]
    assert (item["gt_labels"] == 0).all()
    assert (item["gt_boxes"][:, :2].abs() < 20).all()
    pts = item["points"]
    assert (pts[:, :2].abs() < 20).all() and (pts[:, 2] >= -5).all() and (pts[:, 2] < 3).all()


def test_from_config_takes_geometry_from_the_model_config():
    from types import SimpleNamespace

    from bevctl.phases import DataSpec
    from model.data.nuscenes_dataset import NuScenesDataset

    cfg = SimpleNamespace(point_cloud_range=[-51.2, -51.2, -5, 51.2, 51.2, 3], image_size=(32, 88),
                          map_bound=[[-50, 50, 1.0], [-50, 50, 1.0]], object_classes=["car", "pedestrian"],
                          map_classes=["drivable_area", "divider"])
    spec = DataSpec(root=str(small_dataset()), version="v1.0-mini", sweeps=0)
    ds = NuScenesDataset.from_config(cfg, spec, "mini_val", train=False)
    item = ds[0]
    assert item["img"].shape == (6, 3, 32, 88)
    assert item["gt_masks_bev"].shape == (2, 100, 100)
    assert (item["points"][:, 4] == 0).all()


def test_bad_data_roots_fail_with_one_clear_line(tmp_path):
    from model.data.nuscenes_dataset import NuScenesDataset

    cases = {
        tmp_path / "missing": "does not exist",
        tmp_path: "not a nuScenes data root",
    }
    for root, words in cases.items():
        with pytest.raises(UsageError) as err:
            NuScenesDataset(root, "v1.0-mini", "mini_train")
        line = err.value.one_line()
        assert words in line and "\n" not in line and "bevctl data synth" in line
    broken = tmp_path / "broken"
    (broken / "v1.0-mini").mkdir(parents=True)
    (broken / "v1.0-mini" / "scene.json").write_text("[]")
    for args, words in [
        ((small_dataset(), "v1.0-trainval", "train"), "found: v1.0-mini"),
        ((small_dataset(), "v1.0-mini", "train"), "mini_train"),
        ((broken, "v1.0-mini", "mini_train"), "missing category.json"),
    ]:
        with pytest.raises(UsageError) as err:
            NuScenesDataset(*args)
        assert words in err.value.one_line() and "\n" not in err.value.one_line()


def _as_mmdet3d(info):
    """An info in the layout of BEVFusion's create_data (what users' nuscenes_infos_*.pkl hold)."""
    def rt(m):
        return m[:3, :3], m[:3, 3]

    out = {"token": info["token"], "timestamp": info["timestamp"], "lidar_path": "./data/nuscenes/" +
           info["lidar_path"].split("nuscenes/", 1)[1], "location": info["location"]}
    out["lidar2ego_rotation"], out["lidar2ego_translation"] = rt(info["lidar2ego"])
    out["ego2global_rotation"], out["ego2global_translation"] = rt(info["ego2global"])
    out["sweeps"] = [{"data_path": s["path"], "sensor2lidar_rotation": s["sensor2lidar"][:3, :3],
                      "sensor2lidar_translation": s["sensor2lidar"][:3, 3], "timestamp": s["timestamp"]}
                     for s in info["sweeps"]]
    out["cams"] = {name: {"data_path": c["path"], "cam_intrinsic": c["intrinsics"],
                          "sensor2ego_rotation": c["camera2ego"][:3, :3], "sensor2ego_translation": c["camera2ego"][:3, 3],
                          "sensor2lidar_rotation": c["camera2lidar"][:3, :3],
                          "sensor2lidar_translation": c["camera2lidar"][:3, 3]} for name, c in info["cams"].items()}
    out["gt_boxes"] = info["gt_boxes"]
    out["gt_names"] = np.array(list(info["gt_names"]))
    out["gt_velocity"] = info["gt_velocity"]
    out["num_lidar_pts"] = info["num_lidar_pts"]
    out["num_radar_pts"] = np.zeros_like(info["num_lidar_pts"])
    out["valid_flag"] = info["valid_flag"]
    return out


def _root_with_links(tmp_path, tables=True):
    """A data root of our own (links to the shared synthetic sensor data) where info files may be written."""
    import os

    root = tmp_path / "nuscenes"
    root.mkdir()
    for sub in ("samples", "sweeps", "maps") + (("v1.0-mini",) if tables else ()):
        os.symlink(small_dataset() / sub, root / sub)
    return root


def test_mmdet3d_info_files_give_the_same_samples(eval_ds, tmp_path):
    root = _root_with_links(tmp_path)
    infos = [_as_mmdet3d(i) for i in eval_ds.infos]
    with open(root / "nuscenes_infos_val.pkl", "wb") as fh:
        pickle.dump({"infos": infos, "metadata": {"version": "v1.0-mini"}}, fh)
    from model.data.nuscenes_dataset import NuScenesDataset

    from_pkl = NuScenesDataset(root, "v1.0-mini", "mini_train", sweeps=1, train=False, image_size=IMAGE,
                               info_pkl="nuscenes_infos_val.pkl")
    assert len(from_pkl) == len(eval_ds)
    a, b = eval_ds[2], from_pkl[2]
    for key in ("img", "points", "gt_boxes", "gt_labels", "gt_masks_bev", "lidar2image"):
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-4), key
    assert a["metas"]["token"] == b["metas"]["token"]
    # Paths recorded at conversion time (./data/nuscenes/samples/...) are re-anchored at the data root.
    assert from_pkl.infos[0]["lidar_path"].startswith(str(root / "samples"))


def test_info_files_outside_the_data_root_are_not_opened(tmp_path):
    outside = tmp_path / "elsewhere.pkl"
    outside.write_bytes(pickle.dumps({"infos": []}))
    with pytest.raises(UsageError) as err:
        make(info_pkl=str(outside))
    assert "outside the data root" in err.value.one_line()


def test_info_files_with_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned",))

    root = _root_with_links(tmp_path)
    (root / "evil.pkl").write_bytes(pickle.dumps({"infos": [Evil()]}))
    from model.data.nuscenes_dataset import NuScenesDataset

    with pytest.raises(UsageError, match="not a readable nuScenes info file"):
        NuScenesDataset(root, "v1.0-mini", "mini_train", info_pkl="evil.pkl")


def test_package_entry_points_stay_functions(eval_ds):
    import types

    import model.data
    import model.data.batch  # noqa: F401 - importing submodules must not shadow the package functions
    import model.data.loader  # noqa: F401

    assert not isinstance(model.data.collate, types.ModuleType)
    batch = model.data.collate([eval_ds[0]])
    assert batch["img"].shape[0] == 1


def test_bev_masks_agree_with_the_devkit_rasteriser(eval_ds):
    """Without augmentation our masks match NuScenesMap.get_map_mask for a patch aligned with the LiDAR heading."""
    from nuscenes.map_expansion.map_api import NuScenesMap

    info = eval_ds.infos[1]
    l2g = info["ego2global"] @ info["lidar2ego"]
    yaw = np.degrees(np.arctan2(l2g[1, 0], l2g[0, 0]))
    m = NuScenesMap(dataroot=str(small_dataset()), map_name=info["location"])
    layers = ["drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area"]
    theirs = m.get_map_mask((l2g[0, 3], l2g[1, 3], 100, 100), yaw, layers, (200, 200))
    # The devkit's canvas rows run along +y from the bottom, columns along +x: transpose to [x, y].
    theirs = theirs.transpose(0, 2, 1)
    ours = eval_ds[1]["gt_masks_bev"][:5].numpy()
    from scipy.ndimage import binary_dilation, binary_erosion

    for k, name in enumerate(layers):
        # Same area; the devkit rounds vertices to whole cells while the contract puts cell centres at +0.5, so
        # allow one cell of disagreement along the edges: at most the devkit mask's edge cells (an edge that falls
        # on a cell boundary flips a whole row of cells, 4 % of a narrow ped crossing)
        edge = int((theirs[k].astype(bool) & ~binary_erosion(theirs[k].astype(bool))).sum())
        assert abs(int(ours[k].sum()) - int(theirs[k].sum())) <= max(edge, 5), name
        # and no cell further than one from the other mask (diagonally too: a corner moves in x and y)
        near = np.ones((3, 3), bool)
        assert not (ours[k].astype(bool) & ~binary_dilation(theirs[k].astype(bool), near)).any(), name
        assert not (theirs[k].astype(bool) & ~binary_dilation(ours[k].astype(bool), near)).any(), name


def test_info_files_work_without_the_tables(eval_ds, tmp_path):
    """Users with info files and sensor data only (no v1.0-* tables) can still train."""
    root = _root_with_links(tmp_path, tables=False)
    infos = [_as_mmdet3d(i) for i in eval_ds.infos]
    with open(root / "infos.pkl", "wb") as fh:
        pickle.dump({"infos": infos}, fh)
    from model.data.nuscenes_dataset import NuScenesDataset

    ds = NuScenesDataset(root, "v1.0-trainval", "train", sweeps=1, train=False, image_size=IMAGE, info_pkl="infos.pkl")
    assert len(ds) == len(eval_ds)
    assert torch.allclose(ds[0]["gt_boxes"], eval_ds[0]["gt_boxes"])


def test_a_corrupt_table_is_one_line_not_a_devkit_traceback(tmp_path):
    import shutil

    from model.data.nuscenes_dataset import NuScenesDataset

    root = tmp_path / "nuscenes"
    shutil.copytree(small_dataset() / "v1.0-mini", root / "v1.0-mini")
    (root / "v1.0-mini" / "sample.json").write_text("[{")
    with pytest.raises(UsageError) as err:
        NuScenesDataset(root, "v1.0-mini", "mini_train")
    line = err.value.one_line()
    assert "nuscenes-devkit cannot read" in line and "\n" not in line


def test_loader_with_workers_gives_the_same_eval_batches(eval_ds):
    import pickle as _pickle

    from model.data.loader import build_loader

    eval_ds[0]  # opens a map index in this process; workers must not need it
    assert _pickle.loads(_pickle.dumps(eval_ds))._maps == {}
    single = next(iter(build_loader(eval_ds, batch_size=2, workers=0, shuffle=False)))
    multi = next(iter(build_loader(eval_ds, batch_size=2, workers=2, shuffle=False, persistent_workers=False)))
    for key in ("img", "gt_masks_bev", "lidar2image"):
        assert torch.equal(single[key], multi[key]), key
    assert all(torch.equal(a, b) for a, b in zip(single["points"], multi["points"]))


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    """Exact resume: a train item's draws depend only on (seed, epoch, index), not on what was loaded before."""
    from model.data.loader import build_loader

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in ("img", "points", "img_aug_matrix", "lidar_aug_matrix", "gt_boxes"))

    ds = make(train=True, map_classes=(), seed=3)
    ds.set_epoch(1)
    first = ds[2]
    ds[0], ds[1], ds[2]  # other items, and the same one again, draw nothing away from it
    fresh = make(train=True, map_classes=(), seed=3)  # another process's copy, e.g. after a resume
    fresh.set_epoch(1)
    assert same(fresh[2], first) and same(ds[2], first) and same(ds[-len(ds) + 2], first)
    assert not torch.equal(fresh[2]["lidar_aug_matrix"], fresh[1]["lidar_aug_matrix"])  # per index
    fresh.set_epoch(2)
    assert not torch.equal(fresh[2]["lidar_aug_matrix"], first["lidar_aug_matrix"])  # per epoch
    assert not torch.equal(fresh[2]["img_aug_matrix"], first["img_aug_matrix"])
    other_seed = make(train=True, map_classes=(), seed=4)
    other_seed.set_epoch(1)
    assert not torch.equal(other_seed[2]["lidar_aug_matrix"], first["lidar_aug_matrix"])
    # Loader workers copy the epoch when the iterator is created: the same batches as in-process loading.
    fresh.set_epoch(1)
    single = next(iter(build_loader(fresh, batch_size=3, workers=0, shuffle=False)))
    multi = next(iter(build_loader(fresh, batch_size=3, workers=2, shuffle=False, persistent_workers=False)))
    assert torch.equal(single["lidar_aug_matrix"][2], first["lidar_aug_matrix"])
    for key in ("img", "lidar_aug_matrix", "img_aug_matrix"):
        assert torch.equal(single[key], multi[key]), key
    assert all(torch.equal(a, b) for a, b in zip(single["points"], multi["points"]))


def test_the_phase_sets_the_training_augmentation():
    """`data.augment` reaches the loader: turned off, a training item is the eval item; the default augments."""
    from types import SimpleNamespace

    import torch

    from bevctl.phases import DataSpec
    from model.data.nuscenes_dataset import NuScenesDataset

    cfg = SimpleNamespace(point_cloud_range=WIDE, image_size=IMAGE, map_bound=[[-50, 50, 2.0], [-50, 50, 2.0]],
                          object_classes=["car", "pedestrian"], map_classes=["drivable_area"])
    off = {"global_rot": [0, 0], "global_scale": [1, 1], "global_translate_std": 0, "flip": False,
           "image_rot_deg": [0, 0], "image_flip": False}
    plain = DataSpec(root=str(small_dataset()), version="v1.0-mini", sweeps=1)
    still = DataSpec(root=str(small_dataset()), version="v1.0-mini", sweeps=1, augment=off)
    for index in range(3):
        item = NuScenesDataset.from_config(cfg, still, "mini_train", train=True)[index]
        assert torch.equal(item["lidar_aug_matrix"], torch.eye(4))
        assert torch.equal(item["gt_boxes"], NuScenesDataset.from_config(cfg, still, "mini_train", train=False)[index]["gt_boxes"])
    moved = [NuScenesDataset.from_config(cfg, plain, "mini_train", train=True)[i]["lidar_aug_matrix"] for i in range(3)]
    assert not all(torch.equal(m, torch.eye(4)) for m in moved)
