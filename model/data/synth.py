"""Synthetic nuScenes: a small dataset in the real nuScenes layout, deterministic from a seed.

`ensure_dataset(root, scenes=10, samples_per_scene=4, seed=0, sweeps=2, version="v1.0-mini")` writes (once) a
nuScenes tree: the 13 JSON tables with consistent tokens, `samples/LIDAR_TOP/*.pcd.bin` (5 float32 per point: x, y, z,
intensity, ring), `sweeps/LIDAR_TOP/*.pcd.bin`, six 1600×900 JPEGs per sample with the real rig calibration,
`maps/expansion/<location>.json` (map expansion v1.3) and the basemap PNGs the `map` table names. Scenes take
official scene names, so `nuscenes.utils.splits` resolves the splits: `v1.0-mini` (up to 10 scenes, `mini_train` /
`mini_val`) or `v1.0-trainval` (up to 120 scenes, `train` / `val`; more scenes of fewer frames each is more variety
for the same number of samples).

The dataset is written to a temporary folder next to `root` and renamed into place, so an interrupted run leaves
nothing half-written and concurrent callers (several ranks) end up with one complete copy.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from bevctl.phases import SYNTH_SCENES_MAX, SYNTH_SPLITS
from model.data.geometry import apply, points_in_boxes, rigid_inv, transform, yaw_to_quat
from model.data.rig import CAMERA_CALIB, CAMERAS, IMAGE_HEIGHT, IMAGE_WIDTH, LIDAR
from model.data.synth_map import MapBuilder, token
from model.data.synth_world import CATEGORY_LOOK, SWEEP_PERIOD_S, SceneWorld, plan_split

VERSION = "v1.0-mini"  # the default; SYNTH_SPLITS holds each version's (train, val) devkit split names
MARKER = "synth.json"
# Bumped whenever the same seed would generate different data; a dataset from another generator is reported.
# 2: LiDAR sees road paint and kerbs, every detection class common, road works closing a lane.
# 3: each split shows every detection class where a scene can (a split that already did is unchanged).
GENERATOR = 3
ANNOTATION_RADIUS = 60.0

CATEGORIES = [
    ("animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker"),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene to redirect traffic."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly."),
    ("vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo."),
]
ATTRIBUTES = [
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is someone riding a bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on a bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
]
VISIBILITY = [("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]


def scene_names(scenes: int, version: str = VERSION) -> list[str]:
    """Official scene names of `version`: about the split's share (at least one) from val, the rest from train."""
    from nuscenes.utils import splits

    train, val = (getattr(splits, name) for name in SYNTH_SPLITS[version])
    most = SYNTH_SCENES_MAX[version]
    if not 2 <= scenes <= most:
        raise ValueError(f"scenes must be between 2 and {most} for {version}, got {scenes}")
    n_val = max(1, round(scenes * len(val) / (len(train) + len(val))))
    return list(train[: scenes - n_val]) + list(val[:n_val])


# A box the check revolution hits this often gets at least one return in the written key frame too (whose random
# azimuth offset and range noise differ), so the devkit, which drops boxes without LiDAR points, keeps it.
MIN_CHECK_POINTS = 5


@functools.lru_cache(maxsize=None)
def eval_ranges() -> dict[str, float]:
    """The devkit's evaluation range of each detection class (detection_cvpr_2019, the config the trainer uses)."""
    from nuscenes.eval.detection.config import config_factory

    return config_factory("detection_cvpr_2019").class_range


def classes_seen(w: SceneWorld) -> set[str]:
    """Detection classes with a box within the class's evaluation range of the ego at a key frame that takes at
    least MIN_CHECK_POINTS returns of a LiDAR revolution cast there (over flat ground: only the boxes matter)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    from model.data.synth_sensors import cast_lidar

    ranges = eval_ranges()
    lidar2ego = transform(LIDAR["rotation"], LIDAR["translation"])
    rng = np.random.default_rng([w.index, 13])
    seen: set[str] = set()
    for t in w.key_times():
        pos, yaw = w.ego_pose(t)
        lidar2global = transform(yaw_to_quat(yaw), [float(v) for v in pos]) @ lidar2ego
        objs = np.array([i.box_at(t) for i in w.instances]).reshape(-1, 7)
        _, hit = cast_lidar(lidar2global, np.concatenate([objs, w.clutter], 0), np.zeros(len(objs) + len(w.clutter)),
                            rng)
        hits = np.bincount(hit[hit >= 0], minlength=len(objs) + len(w.clutter))
        for i, inst in enumerate(w.instances):
            name = category_to_detection_name(inst.category)
            if (name and name not in seen and hits[i] >= MIN_CHECK_POINTS
                    and np.hypot(*(objs[i, :2] - pos[:2])) <= ranges[name]):
                seen.add(name)
    return seen


def split_indices(names: list[str], version: str = VERSION) -> list[list[int]]:
    """The positions in `names` of each split's scenes (train, val)."""
    from nuscenes.utils import splits

    val = set(getattr(splits, SYNTH_SPLITS[version][1]))
    return [[i for i, n in enumerate(names) if n not in val], [i for i, n in enumerate(names) if n in val]]


def dataset_exists(root: Path | str, version: Optional[str] = None) -> bool:
    """Whether `root` holds the tables of `version` (of any version the generator writes when None)."""
    return any((Path(root) / v / "scene.json").is_file() and (Path(root) / v / "sample_data.json").is_file()
               for v in ([version] if version else SYNTH_SPLITS))


def ensure_dataset(root, scenes: int = 10, samples_per_scene: int = 4, seed: int = 0, sweeps: int = 2,
                   progress: Optional[bool] = None, version: str = VERSION, config=None) -> Path:
    """Generate the synthetic dataset at `root` unless a dataset is already there (then a no-op).

    `version` is v1.0-mini or v1.0-trainval; `config` (a model config) is accepted for symmetry with the loader: the
    dataset does not depend on the model geometry. User-fixable problems raise `UsageError`.
    """
    from bevctl.errors import UsageError

    root = Path(root).expanduser()
    if version not in SYNTH_SPLITS:
        raise UsageError(f"synthetic data is generated as {' or '.join(SYNTH_SPLITS)}, but data.version is {version}",
                         fix=f"set data.version: {VERSION} (and the splits mini_train / mini_val)")
    if dataset_exists(root, version):
        _warn_if_different(root, generator=GENERATOR, scenes=scenes, samples_per_scene=samples_per_scene, seed=seed,
                           sweeps=sweeps)
        return root
    if dataset_exists(root):
        raise UsageError(f"data root {root} holds a synthetic dataset of another version, not {version}",
                         fix="point data.root at a new folder, or delete this one to regenerate it")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"data root {root} is not empty and holds no nuScenes dataset",
                         fix="point data.root at a new folder for the synthetic data")
    try:
        generate(root, scenes=scenes, samples_per_scene=samples_per_scene, seed=seed, sweeps=sweeps, progress=progress,
                 version=version)
    except ValueError as exc:
        raise UsageError(f"cannot generate synthetic data: {exc}", fix="check data.synth in the phase") from None
    return root


def _warn_if_different(root: Path, **wanted) -> None:
    try:
        have = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a real or foreign dataset: nothing to compare
    if not isinstance(have, dict):
        return
    if "generator" not in have:
        have["generator"] = 1  # written before the generator was versioned
    differs = {k: have.get(k) for k, v in wanted.items() if k in have and have[k] != v}
    if differs:
        import warnings

        warnings.warn(f"{root} already holds a synthetic dataset with {differs}; it is used as it is "
                      f"(delete the folder to regenerate with {wanted})", stacklevel=3)


def generate(root, scenes: int = 10, samples_per_scene: int = 4, seed: int = 0, sweeps: int = 2,
             progress: Optional[bool] = None, version: str = VERSION) -> dict:
    """Write a fresh synthetic dataset at `root` (which must be absent or empty); returns a summary dict."""
    root = Path(root)
    if samples_per_scene < 1:
        raise ValueError("samples_per_scene must be at least 1")
    if not 0 <= sweeps <= 9:
        raise ValueError("sweeps must be between 0 and 9 (LiDAR sweeps between two 2 Hz key frames)")
    if version not in SYNTH_SPLITS:
        raise ValueError(f"version must be one of {', '.join(SYNTH_SPLITS)}, got {version}")
    names = scene_names(scenes, version)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    started = time.perf_counter()
    try:
        summary = _write(tmp, version, names, samples_per_scene, seed, sweeps,
                         _progress(progress, len(names) * samples_per_scene))
        if root.exists():
            root.rmdir()  # empty (checked above)
        try:
            os.rename(tmp, root)
        except OSError:
            if not dataset_exists(root, version):  # someone else finished first: keep theirs
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["root"] = str(root)
    return summary


# ------------------------------------------------------------------------------------------------ writing


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, n: int = 1) -> None:
        pass


class _RichProgress:
    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("generating synthetic nuScenes"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("samples  ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                           transient=True)
        self._total = total

    def __enter__(self):
        self._p.__enter__()
        self._task = self._p.add_task("synth", total=self._total)
        return self

    def __exit__(self, *exc):
        return self._p.__exit__(*exc)

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._task, n)


def _progress(wanted: Optional[bool], total: int):
    if wanted is None:
        wanted = sys.stderr.isatty()
    return _RichProgress(total) if wanted else _NoProgress()


def _write(root: Path, version: str, names: list[str], samples: int, seed: int, sweeps: int, progress) -> dict:
    import cv2

    root.mkdir(parents=True)
    tables: dict[str, list] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor",
                                               "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                               "sample_data", "sample_annotation", "map")}
    cat_tok = {name: token("category", name) for name, _ in CATEGORIES}
    tables["category"] = [{"token": cat_tok[n], "name": n, "description": d} for n, d in CATEGORIES]
    attr_tok = {name: token("attribute", name) for name, _ in ATTRIBUTES}
    tables["attribute"] = [{"token": attr_tok[n], "name": n, "description": d} for n, d in ATTRIBUTES]
    tables["visibility"] = [{"token": t, "level": lv, "description": f"visibility of whole object is between {lv[1:].replace('-', ' and ')} %"}
                            for t, lv in VISIBILITY]
    channels = ("LIDAR_TOP",) + CAMERAS
    sensor_tok = {c: token("sensor", c) for c in channels}
    tables["sensor"] = [{"token": sensor_tok[c], "channel": c, "modality": "lidar" if c == "LIDAR_TOP" else "camera"}
                        for c in channels]
    for c in channels:
        (root / "samples" / c).mkdir(parents=True)
    (root / "sweeps" / "LIDAR_TOP").mkdir(parents=True)

    maps: dict[str, MapBuilder] = {}
    counts = {"samples": 0, "annotations": 0, "lidar_points": 0}
    jobs = []
    worlds = {}
    for split in split_indices(names, version):
        worlds.update(plan_split(split, names, seed, samples, sweeps, version == VERSION, classes_seen,
                                 set(eval_ranges())))
    for index in range(len(names)):
        world = worlds[index]
        maps.setdefault(world.location, MapBuilder(world.location, seed)).add_scene(world)
        jobs.append((root, world, seed, cat_tok, attr_tok, sensor_tok))
    with progress as bar, _ScenePool(len(names) * samples) as pool:
        # In scene order whatever the pool, so the tables (and every byte written) do not depend on it.
        for rows, scene_counts in (pool.imap(_scene_job, jobs) if pool else map(_scene_job, jobs)):
            for table, new_rows in rows.items():
                tables[table] += new_rows
            for key, value in scene_counts.items():
                counts[key] += value
            bar.advance(samples)

    for location, builder in maps.items():
        builder.write(root)
        map_token = token("map", seed, location)
        png = Path("maps") / f"{map_token}.png"
        # The basemap raster is only used by the devkit's map rendering; a small placeholder keeps the tree light.
        cv2.imwrite(str(root / png), np.zeros((64, 64), np.uint8))
        logs = [lg["token"] for lg in tables["log"] if lg["location"] == location]
        tables["map"].append({"category": "semantic_prior", "token": map_token, "filename": str(png), "log_tokens": logs})

    (root / version).mkdir()
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows, indent=0), encoding="utf-8")
    summary = {"version": version, "generator": GENERATOR, "scenes": len(names), "scene_names": names, "samples_per_scene": samples,
               "sweeps": sweeps, "seed": seed, "samples": counts["samples"], "annotations": counts["annotations"],
               "mean_lidar_points": int(counts["lidar_points"] / max(counts["samples"], 1)),
               "image_size": [IMAGE_WIDTH, IMAGE_HEIGHT], "maps": sorted(maps)}
    (root / MARKER).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


# Rendering six 1600x900 images and casting LiDAR per frame is most of the work, and scenes are independent: a
# dataset of more than this many frames is written by two processes (spawned: the caller may be a trainer rank
# with threads running, where forking is unsafe).
POOL_FROM_FRAMES = 40


class _ScenePool:
    def __init__(self, frames: int):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.processes = min(2, cores) if frames >= POOL_FROM_FRAMES else 1
        self.pool = None

    def __enter__(self):
        if self.processes > 1:
            import multiprocessing

            self.pool = multiprocessing.get_context("spawn").Pool(self.processes)
        return self.pool

    def __exit__(self, *exc):
        if self.pool is not None:
            if exc[0] is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
        return False


def _scene_job(job) -> tuple[dict[str, list], dict[str, int]]:
    """Write one planned scene's files; its table rows and counts come back to be appended in scene order."""
    import cv2

    root, world, seed, cat_tok, attr_tok, sensor_tok = job
    rows: dict[str, list] = collections.defaultdict(list)
    counts = {"samples": 0, "annotations": 0, "lidar_points": 0}
    _write_scene(root, world, seed, rows, cat_tok, attr_tok, sensor_tok, counts, cv2)
    return dict(rows), counts


def _write_scene(root, w: SceneWorld, seed, tables, cat_tok, attr_tok, sensor_tok, counts, cv2) -> None:
    from model.data.synth_sensors import GroundSurface, Painter, cast_lidar

    rng = np.random.default_rng([seed, w.index, 11])
    tk = lambda *p: token(seed, w.name, *p)  # noqa: E731 - short local token helper
    date = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(w.t0_us / 1e6))
    vehicle = "n015" if w.location.startswith("singapore") else "n008"
    logfile = f"{vehicle}-{date}{'+0800' if vehicle == 'n015' else '-0400'}"
    log_token = tk("log")
    tables["log"].append({"token": log_token, "logfile": logfile, "vehicle": vehicle, "date_captured": date[:10],
                          "location": w.location})
    calib_tok = {}
    for c in sensor_tok:
        calib_tok[c] = tk("calibrated_sensor", c)
        cal = LIDAR if c == "LIDAR_TOP" else CAMERA_CALIB[c]
        tables["calibrated_sensor"].append({"token": calib_tok[c], "sensor_token": sensor_tok[c],
                                            "translation": cal["translation"], "rotation": cal["rotation"],
                                            "camera_intrinsic": cal.get("intrinsic", [])})
    lidar2ego = transform(LIDAR["rotation"], LIDAR["translation"])
    cam2ego = {c: transform(CAMERA_CALIB[c]["rotation"], CAMERA_CALIB[c]["translation"]) for c in CAMERAS}
    painter = Painter(w)
    ground = GroundSurface(w.polygons, w.lines)
    colours = np.array([CATEGORY_LOOK[i.category][1] for i in w.instances] + list(map(tuple, w.clutter_rgb)), float)
    intensity = np.array([CATEGORY_LOOK[i.category][2] for i in w.instances] + [30.0] * len(w.clutter), float)
    # Each instance's brightness varies a little so colour alone is not a perfect give-away of identity.
    colours[: len(w.instances)] *= rng.uniform(0.85, 1.1, size=(len(w.instances), 1))
    colours = np.clip(colours, 0, 255)

    def boxes_at(t):
        objs = np.array([i.box_at(t) for i in w.instances]).reshape(-1, 7)
        return np.concatenate([objs, w.clutter], 0)

    def ego_pose_record(t, kind, *key):
        pos, yaw = w.ego_pose(t)
        rec = {"token": tk("ego_pose", kind, *key), "timestamp": w.timestamp_us(t), "rotation": yaw_to_quat(yaw),
               "translation": [float(v) for v in pos]}
        tables["ego_pose"].append(rec)
        return rec, transform(rec["rotation"], rec["translation"])

    sample_tokens = [tk("sample", k) for k in range(w.samples)]
    lidar_chain: list[dict] = []
    cam_chain: dict[str, list[dict]] = {c: [] for c in CAMERAS}
    ann_by_instance: dict[int, list[dict]] = {}
    for k, t in enumerate(w.key_times()):
        ts = w.timestamp_us(t)
        tables["sample"].append({"token": sample_tokens[k], "timestamp": ts, "scene_token": tk("scene"),
                                 "prev": sample_tokens[k - 1] if k else "",
                                 "next": sample_tokens[k + 1] if k + 1 < w.samples else ""})
        # LiDAR sweeps before the key frame (oldest first), then the key frame itself.
        for j in range(w.sweeps, -1, -1):
            tj = t - j * SWEEP_PERIOD_S
            tsj = w.timestamp_us(tj)
            pose_rec, ego2global = ego_pose_record(tj, "LIDAR_TOP", k, j)
            lidar2global = ego2global @ lidar2ego
            pts, _ = cast_lidar(lidar2global, boxes_at(tj), intensity, rng, ground)
            folder = "samples" if j == 0 else "sweeps"
            fname = f"{folder}/LIDAR_TOP/{logfile}__LIDAR_TOP__{tsj}.pcd.bin"
            pts.astype(np.float32).tofile(root / fname)
            rec = {"token": tk("sample_data", "LIDAR_TOP", k, j), "sample_token": sample_tokens[k],
                   "ego_pose_token": pose_rec["token"], "calibrated_sensor_token": calib_tok["LIDAR_TOP"],
                   "timestamp": tsj, "fileformat": "pcd", "is_key_frame": j == 0, "height": 0, "width": 0,
                   "filename": fname, "prev": "", "next": ""}
            lidar_chain.append(rec)
            if j == 0:
                key_pts_global = apply(lidar2global, pts[:, :3].astype(np.float64))
                counts["lidar_points"] += len(pts)
        # Annotations: everything within reach of the key frame, with its LiDAR point count.
        ego_xy = w.ego_pose(t)[0][:2]
        objs = np.array([i.box_at(t) for i in w.instances]).reshape(-1, 7)
        near = np.flatnonzero(np.linalg.norm(objs[:, :2] - ego_xy, axis=1) < ANNOTATION_RADIUS)
        inside = points_in_boxes(key_pts_global, objs[near]).sum(0) if len(near) else []
        for n_pts, i in zip(inside, near):
            inst = w.instances[i]
            vis = "4" if n_pts >= 20 else "3" if n_pts >= 5 else "2" if n_pts > 0 else "1"
            ann = {"token": tk("sample_annotation", i, k), "sample_token": sample_tokens[k],
                   "instance_token": tk("instance", i), "visibility_token": vis,
                   "attribute_tokens": [attr_tok[inst.attribute]] if inst.attribute else [],
                   "translation": [float(v) for v in objs[i, :3]], "size": [float(v) for v in inst.size_wlh],
                   "rotation": yaw_to_quat(inst.yaw), "prev": "", "next": "", "num_lidar_pts": int(n_pts),
                   "num_radar_pts": 0}
            ann_by_instance.setdefault(i, []).append(ann)
            counts["annotations"] += 1
        # Cameras.
        boxes = boxes_at(t)
        for c in CAMERAS:
            pose_rec, ego2global = ego_pose_record(t, c, k)
            cam2global = ego2global @ cam2ego[c]
            img = painter.render(cv2, rigid_inv(cam2global), np.array(CAMERA_CALIB[c]["intrinsic"]),
                                 cam2global[:3, 3], boxes, colours)
            fname = f"samples/{c}/{logfile}__{c}__{ts}.jpg"
            cv2.imwrite(str(root / fname), img, [cv2.IMWRITE_JPEG_QUALITY, 88])
            cam_chain[c].append({"token": tk("sample_data", c, k), "sample_token": sample_tokens[k],
                                 "ego_pose_token": pose_rec["token"], "calibrated_sensor_token": calib_tok[c],
                                 "timestamp": ts, "fileformat": "jpg", "is_key_frame": True,
                                 "height": IMAGE_HEIGHT, "width": IMAGE_WIDTH, "filename": fname,
                                 "prev": "", "next": ""})
        counts["samples"] += 1

    for chain in [lidar_chain, *cam_chain.values()]:
        _link(chain)
        tables["sample_data"].extend(chain)
    for i, anns in sorted(ann_by_instance.items()):
        _link(anns)
        tables["sample_annotation"].extend(anns)
        tables["instance"].append({"token": tk("instance", i), "category_token": cat_tok[w.instances[i].category],
                                   "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                                   "last_annotation_token": anns[-1]["token"]})
    tables["scene"].append({"token": tk("scene"), "log_token": log_token, "nbr_samples": w.samples,
                            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                            "name": w.name, "description": f"Synthetic drive at {w.ego_speed:.1f} m/s, intersection ahead"})


def _link(chain: list[dict]) -> None:
    for a, b in zip(chain[:-1], chain[1:]):
        a["next"], b["prev"] = b["token"], a["token"]


if __name__ == "__main__":  # python -m model.data.synth OUT [scenes]
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    print(json.dumps(generate(out, scenes=n, progress=True), indent=2))
