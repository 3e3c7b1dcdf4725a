"""The synthetic nuScenes tree: the devkit reads it, splits resolve, sensors agree with the annotations."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nuscenes")

from tests.helpers.synth_data import SMALL, small_dataset  # noqa: E402


@pytest.fixture(scope="module")
def nusc():
    from nuscenes import NuScenes

    return NuScenes(version="v1.0-mini", dataroot=str(small_dataset()), verbose=False)


def test_devkit_reads_every_table(nusc):
    root = small_dataset()
    for table in nusc.table_names:
        assert len(getattr(nusc, table)) > 0, table
    assert len(nusc.scene) == SMALL["scenes"]
    assert len(nusc.sample) == SMALL["scenes"] * SMALL["samples_per_scene"]
    for sample in nusc.sample:
        assert set(sample["data"]) == {"LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK",
                                       "CAM_BACK_LEFT", "CAM_BACK_RIGHT"}
        assert sample["anns"]
    for sd in nusc.sample_data:
        path = root / sd["filename"]
        assert path.is_file(), path
        if sd["channel"] == "LIDAR_TOP":
            pts = np.fromfile(path, dtype=np.float32)
            assert pts.size % 5 == 0 and pts.size > 5 * 1000
            assert sd["filename"].startswith("samples/" if sd["is_key_frame"] else "sweeps/")
        else:
            assert (sd["width"], sd["height"]) == (1600, 900)
    sweeps = [sd for sd in nusc.sample_data if not sd["is_key_frame"]]
    assert len(sweeps) == SMALL["scenes"] * SMALL["samples_per_scene"] * SMALL["sweeps"]
    # Chains: every key frame's LiDAR has its sweep right before it.
    for sample in nusc.sample:
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        prev = nusc.get("sample_data", lidar["prev"])
        assert not prev["is_key_frame"] and 0 < lidar["timestamp"] - prev["timestamp"] <= 60_000
    # Instances link their annotations in time order.
    for inst in nusc.instance:
        ann = nusc.get("sample_annotation", inst["first_annotation_token"])
        n = 1
        while ann["next"]:
            nxt = nusc.get("sample_annotation", ann["next"])
            assert nusc.get("sample", nxt["sample_token"])["timestamp"] > nusc.get("sample", ann["sample_token"])["timestamp"]
            ann, n = nxt, n + 1
        assert n == inst["nbr_annotations"] and ann["token"] == inst["last_annotation_token"]


def test_official_mini_splits_resolve(nusc):
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    names = {s["name"] for s in nusc.scene}
    assert names & set(splits["mini_train"]) and names & set(splits["mini_val"])
    assert names <= set(splits["mini_train"]) | set(splits["mini_val"])


def test_categories_map_to_the_ten_detection_classes(nusc):
    from nuscenes.eval.detection.utils import category_to_detection_name

    used = {nusc.get("category", i["category_token"])["name"] for i in nusc.instance}
    detection = {category_to_detection_name(c) for c in used} - {None}
    assert {"car", "pedestrian", "barrier"} <= detection
    assert all(len(a["attribute_tokens"]) <= 1 for a in nusc.sample_annotation)


def test_map_expansion_loads_and_has_every_layer(nusc):
    from nuscenes.map_expansion.map_api import NuScenesMap

    root = small_dataset()
    for log in nusc.log:
        m = NuScenesMap(dataroot=str(root), map_name=log["location"])
        for layer in ("drivable_area", "road_segment", "road_block", "lane", "ped_crossing", "walkway", "stop_line",
                      "road_divider", "lane_divider"):
            assert getattr(m, layer), layer
    sample = nusc.sample[0]
    ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
    loc = nusc.get("log", nusc.get("scene", sample["scene_token"])["log_token"])["location"]
    m = NuScenesMap(dataroot=str(root), map_name=loc)
    mask = m.get_map_mask((ego["translation"][0], ego["translation"][1], 100, 100), 0,
                          ["drivable_area", "walkway", "lane_divider"], (200, 200))
    assert mask[0].mean() > 0.05 and mask[1].any() and mask[2].any()
    assert m.layers_on_point(ego["translation"][0], ego["translation"][1])["drivable_area"]


def test_boxes_have_their_lidar_points(nusc):
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    checked = 0
    for sample in nusc.sample:
        path, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
        pc = LidarPointCloud.from_file(path)
        for box, token in zip(boxes, sample["anns"]):
            ann = nusc.get("sample_annotation", token)
            inside = int(points_in_box(box, pc.points[:3]).sum())
            assert abs(inside - ann["num_lidar_pts"]) <= max(2, 0.05 * inside), (inside, ann["num_lidar_pts"])
            checked += ann["num_lidar_pts"] > 0
    assert checked > 20


def test_devkit_detection_eval_keeps_boxes(nusc):
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.data_classes import DetectionBox

    gt = load_gt(nusc, "mini_val", DetectionBox, verbose=False)
    gt = add_center_dist(nusc, gt)
    kept = filter_eval_boxes(nusc, gt, config_factory("detection_cvpr_2019").class_range, verbose=False)
    assert len(kept.all) > 10
    assert any(np.linalg.norm(b.velocity) > 0.5 for b in kept.all)


def test_boxes_are_painted_where_they_project(nusc):
    """The nearest fully visible car in CAM_FRONT shows the car colour at its projected centre."""
    import cv2
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    hits = 0
    for sample in nusc.sample:
        path, boxes, K = nusc.get_sample_data(sample["data"]["CAM_FRONT"], box_vis_level=BoxVisibility.ALL)
        cars = [b for b in boxes if b.name == "vehicle.car" and b.center[2] > 3]
        if not cars:
            continue
        car = min(cars, key=lambda b: b.center[2])
        u, v = view_points(car.center[:, None], K, normalize=True)[:2, 0]
        assert 0 <= u < 1600 and 0 <= v < 900
        bgr = cv2.imread(path)[int(v), int(u)].astype(float)
        hits += bgr[2] > 90 and bgr[2] > 2 * bgr[1] and bgr[2] > 2 * bgr[0]  # red dominates
    assert hits >= 2


def test_velocities_come_from_moving_instances(nusc):
    speeds = [np.linalg.norm(nusc.box_velocity(a["token"])[:2]) for a in nusc.sample_annotation[:300]]
    speeds = np.nan_to_num(speeds)
    assert (speeds > 1).any() and (speeds < 0.01).any()


def test_same_seed_same_dataset_other_seed_differs(tmp_path):
    from model.data.synth import generate

    tiny = dict(scenes=2, samples_per_scene=1, sweeps=0, progress=False)
    a = generate(tmp_path / "a", seed=5, **tiny)
    b = generate(tmp_path / "b", seed=5, **tiny)
    c = generate(tmp_path / "c", seed=6, **tiny)
    for table in ("sample_annotation", "sample_data", "ego_pose", "scene"):
        ta = (tmp_path / "a" / "v1.0-mini" / f"{table}.json").read_bytes()
        assert ta == (tmp_path / "b" / "v1.0-mini" / f"{table}.json").read_bytes(), table
    sa = json.loads((tmp_path / "a" / "v1.0-mini" / "sample_data.json").read_text())
    lidar = next(sd["filename"] for sd in sa if sd["filename"].endswith(".bin"))
    assert (tmp_path / "a" / lidar).read_bytes() == (tmp_path / "b" / lidar).read_bytes()
    assert a["annotations"] == b["annotations"]
    assert (tmp_path / "a" / "v1.0-mini" / "sample_annotation.json").read_bytes() != \
        (tmp_path / "c" / "v1.0-mini" / "sample_annotation.json").read_bytes()


def test_ensure_dataset_is_a_no_op_when_present():
    from model.data.synth import ensure_dataset

    root = small_dataset()
    before = (root / "v1.0-mini" / "sample.json").stat().st_mtime_ns
    with pytest.warns(UserWarning, match="already holds a synthetic dataset"):
        assert ensure_dataset(root, scenes=5, samples_per_scene=9) == root
    assert (root / "v1.0-mini" / "sample.json").stat().st_mtime_ns == before


def test_ensure_dataset_refuses_what_it_cannot_do(tmp_path):
    from bevctl.errors import UsageError
    from model.data.synth import ensure_dataset

    with pytest.raises(UsageError, match="v1.0-mini or v1.0-trainval"):
        ensure_dataset(tmp_path / "a", version="v1.0-test")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        ensure_dataset(tmp_path / "b")
    with pytest.raises(UsageError, match="scenes"):
        ensure_dataset(tmp_path / "c", scenes=1)
    with pytest.raises(UsageError, match="holds a synthetic dataset of another version, not v1.0-trainval"):
        ensure_dataset(small_dataset(), version="v1.0-trainval")


def test_every_detection_class_appears_in_each_test_scene(nusc):
    """A demo trains on a few dozen samples and nuScenes mAP averages all ten classes, so the generator makes every
    class common. The two scenes of the test dataset show all ten (not guaranteed for every scene and seed)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    classes = {"car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
               "pedestrian", "traffic_cone"}
    for scene in nusc.scene:
        seen = set()
        for inst in nusc.instance:
            first = nusc.get("sample_annotation", inst["first_annotation_token"])
            if nusc.get("sample", first["sample_token"])["scene_token"] == scene["token"]:
                seen.add(category_to_detection_name(nusc.get("category", inst["category_token"])["name"]))
        assert classes <= seen, (scene["name"], classes - seen)


def test_lidar_sees_road_paint_and_the_kerb(nusc):
    """Ground returns on ped crossings are bright and on asphalt dark; walkways stand on a 15 cm kerb."""
    import shapely
    from nuscenes.map_expansion.map_api import NuScenesMap
    from nuscenes.utils.data_classes import LidarPointCloud

    from model.data.geometry import apply, transform

    crossing, walkway_z, road = [], [], []
    for sample in nusc.sample:
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        loc = nusc.get("log", nusc.get("scene", sample["scene_token"])["log_token"])["location"]
        m = NuScenesMap(dataroot=str(small_dataset()), map_name=loc)
        pc = LidarPointCloud.from_file(str(small_dataset() / sd["filename"]))
        cal = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        to_global = transform(pose["rotation"], pose["translation"]) @ transform(cal["rotation"], cal["translation"])
        pts = apply(to_global, pc.points[:3].T.astype(np.float64))
        ground = pts[:, 2] < 0.3
        x, y = pts[:, 0], pts[:, 1]
        on_crossing = shapely.contains_xy(shapely.union_all([m.extract_polygon(r["polygon_token"]) for r in m.ped_crossing]), x, y)
        on_walkway = shapely.contains_xy(shapely.union_all([m.extract_polygon(r["polygon_token"]) for r in m.walkway]), x, y)
        on_drivable = shapely.contains_xy(shapely.union_all([m.extract_polygon(t) for r in m.drivable_area for t in r["polygon_tokens"]]), x, y)
        crossing += list(pc.points[3][ground & on_crossing])
        walkway_z += list(pts[ground & on_walkway, 2])
        road += list(pc.points[3][ground & on_drivable & ~on_crossing & (pts[:, 2] < 0.05)])
    assert len(crossing) > 20 and len(walkway_z) > 20 and len(road) > 1000
    assert np.median(crossing) > 3 * np.median(road)
    assert abs(np.median(walkway_z) - 0.15) < 0.05


def test_a_dataset_of_an_older_generator_is_reported(tmp_path):
    from model.data.synth import MARKER, ensure_dataset

    root = tmp_path / "nuscenes"
    shutil.copytree(small_dataset(), root)
    marker = json.loads((root / MARKER).read_text())
    marker.pop("generator")
    (root / MARKER).write_text(json.dumps(marker))
    with pytest.warns(UserWarning, match="generator"):
        ensure_dataset(root, **SMALL, progress=False)


def test_trainval_scenes_are_official_names_on_separate_map_cells(tmp_path):
    """More scenes than the mini split holds: v1.0-trainval takes train / val scene names, the devkit resolves both
    splits and its official evaluation finds the val samples; no two scenes share a map cell (their roads would mix
    into each other's map ground truth)."""
    from nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes

    from bevctl.phases import SYNTH_SCENES_MAX
    from model.data.synth import generate, scene_names
    from model.data.synth_world import MAX_SCENES, plan_scene, scene_place

    assert SYNTH_SCENES_MAX["v1.0-trainval"] <= MAX_SCENES
    names = scene_names(120, "v1.0-trainval")
    splits = create_splits_scenes()
    assert len(set(names)) == 120 and set(names) <= set(splits["train"]) | set(splits["val"])
    assert 15 <= len(set(names) & set(splits["val"])) <= 25  # the split's share, about 18 %
    assert set(names) & {"scene-0061", "scene-0553"}  # mini scenes are in the train list too
    places = [scene_place(i, n, mini=False) for i, n in enumerate(names)]
    assert len(set(places)) == len(places)
    assert {loc for loc, _ in places} == {"singapore-onenorth", "singapore-hollandvillage", "singapore-queenstown",
                                          "boston-seaport"}
    with pytest.raises(ValueError, match="between 2 and 120"):
        scene_names(121, "v1.0-trainval")
    # Mini scenes keep their own maps (and so the data of generator 2).
    assert plan_scene(0, "scene-0061", 0, 1, 0).location == "singapore-onenorth"

    summary = generate(tmp_path / "tv", scenes=12, samples_per_scene=1, sweeps=0, seed=0, progress=False,
                       version="v1.0-trainval")
    assert summary["version"] == "v1.0-trainval" and summary["samples"] == 12
    nusc = NuScenes(version="v1.0-trainval", dataroot=str(tmp_path / "tv"), verbose=False)
    scene_of = {s["token"]: s["name"] for s in nusc.scene}
    val = [s for s in nusc.sample if scene_of[s["scene_token"]] in splits["val"]]
    train = [s for s in nusc.sample if scene_of[s["scene_token"]] in splits["train"]]
    assert len(val) == 2 and len(train) == 10

    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox

    gt = load_gt(nusc, "val", DetectionBox, verbose=False)
    assert set(gt.sample_tokens) == {s["token"] for s in val} and len(gt.all) > 0
    assert config_factory("detection_cvpr_2019")  # the config the trainer evaluates with


def _devkit_classes(root: Path, version: str) -> dict[str, set[str]]:
    """Per split, the detection classes the devkit evaluates (in class range, with LiDAR points)."""
    from nuscenes import NuScenes
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.data_classes import DetectionBox

    from bevctl.phases import SYNTH_SPLITS

    nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    ranges = config_factory("detection_cvpr_2019").class_range
    out = {}
    for split in SYNTH_SPLITS[version]:
        gt = filter_eval_boxes(nusc, add_center_dist(nusc, load_gt(nusc, split, DetectionBox, verbose=False)), ranges,
                               verbose=False)
        out[split] = {b.detection_name for t in gt.sample_tokens for b in gt[t]}
    return out


def test_every_split_shows_every_detection_class_to_the_devkit(tmp_path):
    """Three one-frame scenes (one of them val): seed 1's first draws miss classes in both splits, so the generator
    draws scenes again; the devkit then evaluates all ten classes in each split (mAP is not capped by the data)."""
    from model.data.synth import classes_seen, eval_ranges, generate, scene_names, split_indices
    from model.data.synth_world import plan_scene

    names = scene_names(3)
    first = [set().union(*(classes_seen(plan_scene(i, names[i], 1, 1, 0)) for i in split))
             for split in split_indices(names)]
    assert all(len(classes) < 10 for classes in first), first
    generate(tmp_path / "d", scenes=3, samples_per_scene=1, sweeps=0, seed=1, progress=False)
    ten = set(eval_ranges())
    assert len(ten) == 10
    assert _devkit_classes(tmp_path / "d", "v1.0-mini") == {"mini_train": ten, "mini_val": ten}


def test_a_split_that_shows_every_class_keeps_its_first_draws():
    from model.data.synth import classes_seen, eval_ranges, scene_names, split_indices
    from model.data.synth_world import plan_scene, plan_split

    names = scene_names(10)
    for split in split_indices(names):
        worlds = plan_split(split, names, 0, 4, 2, True, classes_seen, set(eval_ranges()))
        assert [worlds[i].t0_us for i in split] == [plan_scene(i, names[i], 0, 4, 2).t0_us for i in split]
