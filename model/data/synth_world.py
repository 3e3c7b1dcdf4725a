"""The content of one synthetic scene: a road layout (map layers), the ego's drive, annotated objects and clutter.

Everything here is planned from a seeded RNG and kept in global coordinates (metres, ground at z = 0); sensors
and tables are derived from it elsewhere (`synth_sensors`, `synth`). A scene is a straight four-lane road with a
cross road, walkways, ped crossings, stop lines, maybe a car park, buildings and poles along it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

SAMPLE_PERIOD_S = 0.5  # key frames at 2 Hz
SWEEP_PERIOD_S = 0.05  # LiDAR at 20 Hz
LANE_W = 3.5
ROAD_HALF = 2 * LANE_W  # four lanes, two per direction
WALK_W = 3.5

# nuScenes category → (mean size [w, l, h], colour RGB used in the images, LiDAR intensity)
CATEGORY_LOOK = {
    "vehicle.car": ((1.95, 4.62, 1.73), (200, 30, 30), 40),
    "vehicle.truck": ((2.51, 6.93, 2.84), (30, 60, 200), 50),
    "vehicle.construction": ((2.85, 6.37, 3.19), (240, 200, 0), 60),
    "vehicle.bus.rigid": ((2.94, 11.0, 3.47), (0, 170, 170), 55),
    "vehicle.bus.bendy": ((2.94, 16.0, 3.47), (0, 170, 170), 55),
    "vehicle.trailer": ((2.90, 12.29, 3.87), (140, 70, 20), 45),
    "movable_object.barrier": ((2.53, 0.50, 0.98), (250, 140, 0), 70),
    "vehicle.motorcycle": ((0.77, 2.11, 1.47), (190, 0, 190), 35),
    "vehicle.bicycle": ((0.60, 1.70, 1.28), (0, 200, 60), 30),
    "human.pedestrian.adult": ((0.67, 0.73, 1.77), (255, 120, 180), 25),
    "human.pedestrian.child": ((0.52, 0.51, 1.30), (255, 120, 180), 25),
    "human.pedestrian.construction_worker": ((0.68, 0.72, 1.78), (255, 120, 180), 25),
    "human.pedestrian.police_officer": ((0.70, 0.73, 1.80), (255, 120, 180), 25),
    "movable_object.trafficcone": ((0.41, 0.41, 1.07), (255, 80, 0), 80),
    "movable_object.pushable_pullable": ((0.60, 0.70, 1.10), (90, 90, 90), 20),
}

# The official mini scenes and the map they were recorded on.
SCENE_LOCATION = {
    "scene-0061": "singapore-onenorth",
    "scene-0553": "boston-seaport",
    "scene-0655": "boston-seaport",
    "scene-0757": "boston-seaport",
    "scene-0796": "singapore-queenstown",
    "scene-1077": "singapore-hollandvillage",
    "scene-1094": "singapore-hollandvillage",
    "scene-1100": "singapore-hollandvillage",
    "scene-0103": "boston-seaport",
    "scene-0916": "singapore-queenstown",
}

# Map extents [width, height] in metres, as documented by the devkit's NuScenesMap.
MAP_DIMS = {
    "singapore-onenorth": (1585.6, 2025.0),
    "singapore-hollandvillage": (2808.3, 2922.9),
    "singapore-queenstown": (3228.6, 3687.1),
    "boston-seaport": (2979.5, 2118.1),
}
# Scenes of one map sit in separate 400 m cells (inside a 400 m margin) so their roads do not interfere.
CELL_M = 400.0


def _cells(location: str) -> list[tuple[int, int]]:
    width, height = MAP_DIMS[location]
    return [(col, row) for row in range(int(height // CELL_M) - 1) for col in range(int(width // CELL_M) - 1)]


# Scenes without a known location (beyond the mini split) take the maps' cells in turn, one map after the other.
_FREE_CELLS = [(loc, cell) for k in range(max(len(_cells(m)) for m in MAP_DIMS))
               for loc in MAP_DIMS for cell in _cells(loc)[k:k + 1]]
MAX_SCENES = len(_FREE_CELLS)


def scene_place(index: int, name: str, mini: bool = True) -> tuple[str, tuple[int, int]]:
    """The map and 400 m cell of the scene at `index`: in a mini dataset the scene's own map, else the next free
    cell (the train / val lists hold the mini scenes too: their own maps would collide with the free cells)."""
    if mini and name in SCENE_LOCATION:
        location = SCENE_LOCATION[name]
        cells = _cells(location)
        return location, cells[index % len(cells)]
    if index >= MAX_SCENES:
        raise ValueError(f"at most {MAX_SCENES} synthetic scenes fit on the four maps, got scene {index + 1}")
    return _FREE_CELLS[index]


@dataclass
class Instance:
    category: str
    size_wlh: tuple[float, float, float]
    start: np.ndarray  # global centre at t = 0 (box centre, z = h / 2)
    velocity: np.ndarray  # global m/s, constant
    yaw: float
    attribute: str | None

    def box_at(self, t: float) -> np.ndarray:
        """[x, y, z, l, w, h, yaw] in the global frame at scene time t (s)."""
        c = self.start + self.velocity * t
        w, l, h = self.size_wlh
        return np.array([c[0], c[1], c[2], l, w, h, self.yaw])


@dataclass
class SceneWorld:
    index: int
    name: str
    location: str
    origin: np.ndarray
    heading: float
    cross_s: float
    ego_speed: float
    t0_us: int
    samples: int
    sweeps: int
    polygons: dict[str, list[np.ndarray]] = field(default_factory=dict)  # layer -> [N, 2] rings (global)
    lines: dict[str, list[np.ndarray]] = field(default_factory=dict)  # layer -> [N, 2] polylines (global)
    instances: list[Instance] = field(default_factory=list)
    clutter: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))  # static unannotated boxes
    clutter_rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    # --- frames of the road: s along the heading, d to the left
    def to_global(self, s, d) -> np.ndarray:
        e = np.array([np.cos(self.heading), np.sin(self.heading)])
        n = np.array([-np.sin(self.heading), np.cos(self.heading)])
        s, d = np.broadcast_arrays(np.asarray(s, float), np.asarray(d, float))
        return self.origin + s[..., None] * e + d[..., None] * n

    def rect(self, s0, s1, d0, d1) -> np.ndarray:
        return self.to_global(np.array([s0, s1, s1, s0]), np.array([d0, d0, d1, d1]))

    def ego_pose(self, t: float) -> tuple[np.ndarray, float]:
        """Ego position (x, y, 0) and yaw at scene time t; the ego drives in the right lane of the main road."""
        xy = self.to_global(self.ego_speed * t, -LANE_W / 2)
        return np.array([xy[0], xy[1], 0.0]), self.heading

    def key_times(self) -> list[float]:
        return [k * SAMPLE_PERIOD_S for k in range(self.samples)]

    def timestamp_us(self, t: float) -> int:
        return self.t0_us + int(round(t * 1e6))


def plan_scene(index: int, name: str, seed: int, samples: int, sweeps: int, mini: bool = True,
               variant: int = 0) -> SceneWorld:
    """Scene `index`'s world; `variant` > 0 draws another one at the same place (see `plan_split`)."""
    rng = np.random.default_rng([seed, index, 7] if variant == 0 else [seed, index, 7, variant])
    location, (col, row) = scene_place(index, name, mini)
    origin = np.array([CELL_M * (1 + col), CELL_M * (1 + row)], float) + rng.uniform(-30, 30, size=2)
    heading = float(rng.uniform(-np.pi, np.pi))
    ego_speed = float(rng.choice([0.0, rng.uniform(2, 5), rng.uniform(5, 9)], p=[0.15, 0.35, 0.5]))
    duration = (samples - 1) * SAMPLE_PERIOD_S
    travel = ego_speed * duration
    cross_s = float(travel / 2 + rng.uniform(18, 40))
    t0_us = 1531883530000000 + index * 3_600_000_000 + int(rng.integers(0, 10**6))
    w = SceneWorld(index, name, location, origin, heading, cross_s, ego_speed, t0_us, samples, sweeps)
    _lay_out_roads(w, rng, travel)
    _place_objects(w, rng, travel)
    _place_clutter(w, rng, travel)
    return w


MAX_VARIANTS = 12


def plan_split(indices: list[int], names: list[str], seed: int, samples: int, sweeps: int, mini: bool,
               shown: Callable[[SceneWorld], set[str]], everything: set[str]) -> dict[int, SceneWorld]:
    """The worlds of one split's scenes, such that `shown` (a world -> the detection classes the evaluation sees in
    it) covers `everything` (the ten classes).

    nuScenes mAP averages the ten classes over a split, and a class the split never shows scores AP 0: a small
    split (the mini version's val holds one or two scenes) would cap mAP whatever the model learns. A scene is
    drawn again (another `variant` at the same place) only while the split misses a class, and the new draw is
    kept when the split then shows more classes, so a split that shows all ten keeps its first draws. Single scenes
    may still miss a class, as real scenes do. A split of one scene of one key frame may not show all ten in any
    draw: after MAX_VARIANTS rounds it keeps the best it found.
    """
    worlds = {i: plan_scene(i, names[i], seed, samples, sweeps, mini) for i in indices}
    seen: dict[int, set[str]] = {}
    for i in indices:  # the usual case: a few scenes show everything, the rest need no look
        seen[i] = shown(worlds[i])
        if set().union(*seen.values()) >= everything:
            return worlds
    for variant in range(1, MAX_VARIANTS + 1):
        for i in indices:
            covered = set().union(*seen.values())
            if covered >= everything:
                return worlds
            others = set().union(*(c for j, c in seen.items() if j != i))
            alt = plan_scene(i, names[i], seed, samples, sweeps, mini, variant)
            alt_seen = shown(alt)
            if len(others | alt_seen) > len(covered):
                worlds[i], seen[i] = alt, alt_seen
    return worlds

# ------------------------------------------------------------------------------------------------ map layers


def _lay_out_roads(w: SceneWorld, rng: np.random.Generator, travel: float) -> None:
    s_min, s_max = -110.0, travel + 110.0
    xc = w.cross_s
    cross_len = 110.0
    P: dict[str, list[np.ndarray]] = {k: [] for k in ("drivable_area", "road_segment", "road_block", "lane",
                                                      "ped_crossing", "walkway", "stop_line", "carpark_area")}
    L: dict[str, list[np.ndarray]] = {"road_divider": [], "lane_divider": []}

    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    main = Polygon(w.rect(s_min, s_max, -ROAD_HALF, ROAD_HALF))
    cross = Polygon(w.rect(xc - ROAD_HALF, xc + ROAD_HALF, -cross_len, cross_len))
    area = unary_union([main, cross])
    P["drivable_area"].append(np.asarray(area.exterior.coords)[:-1])

    # Road segments: the two main-road stretches, the intersection, the two cross-road arms.
    inter = (xc - ROAD_HALF, xc + ROAD_HALF)
    P["road_segment"] += [
        w.rect(s_min, inter[0], -ROAD_HALF, ROAD_HALF),
        w.rect(inter[0], inter[1], -ROAD_HALF, ROAD_HALF),
        w.rect(inter[1], s_max, -ROAD_HALF, ROAD_HALF),
        w.rect(inter[0], inter[1], ROAD_HALF, cross_len),
        w.rect(inter[0], inter[1], -cross_len, -ROAD_HALF),
    ]
    for a, b in ((s_min, inter[0]), (inter[1], s_max)):
        P["road_block"] += [w.rect(a, b, -ROAD_HALF, 0), w.rect(a, b, 0, ROAD_HALF)]
        for k in range(4):
            P["lane"].append(w.rect(a, b, -ROAD_HALF + k * LANE_W, -ROAD_HALF + (k + 1) * LANE_W))
        L["road_divider"].append(w.to_global(np.array([a, b]), np.array([0.0, 0.0])))
        for d in (-LANE_W, LANE_W):
            L["lane_divider"].append(w.to_global(np.array([a, b]), np.array([d, d])))
    for sign in (1, -1):  # cross-road arms
        d_in, d_out = sign * ROAD_HALF, sign * cross_len
        L["road_divider"].append(w.to_global(np.array([xc, xc]), np.array([d_in, d_out])))
        for off in (-LANE_W, LANE_W):
            L["lane_divider"].append(w.to_global(np.array([xc + off, xc + off]), np.array([d_in, d_out])))
        lo, hi = sorted((sign * (ROAD_HALF + WALK_W), d_out))  # starts behind the main road's walkway
        P["walkway"] += [
            w.rect(xc + ROAD_HALF, xc + ROAD_HALF + WALK_W, lo, hi),
            w.rect(xc - ROAD_HALF - WALK_W, xc - ROAD_HALF, lo, hi),
        ]
    # Main-road walkways, interrupted by the cross road.
    for a, b in ((s_min, inter[0] - WALK_W), (inter[1] + WALK_W, s_max)):
        P["walkway"] += [w.rect(a, b, ROAD_HALF, ROAD_HALF + WALK_W), w.rect(a, b, -ROAD_HALF - WALK_W, -ROAD_HALF)]
    # Ped crossings on both sides of the intersection, stop lines before them (per direction of travel).
    for sign in (-1, 1):
        near = xc + sign * (ROAD_HALF + 1.0)
        far = xc + sign * (ROAD_HALF + 5.0)
        P["ped_crossing"].append(w.rect(min(near, far), max(near, far), -ROAD_HALF, ROAD_HALF))
        s_stop = xc + sign * (ROAD_HALF + 6.0)
        d_lo, d_hi = (-ROAD_HALF, 0.0) if sign < 0 else (0.0, ROAD_HALF)
        P["stop_line"].append(w.rect(min(s_stop, s_stop + sign * 1.5), max(s_stop, s_stop + sign * 1.5), d_lo, d_hi))
    # A car park behind the left walkway, away from the intersection.
    if rng.random() < 0.8:
        a = float(rng.uniform(-60, xc - 60)) if rng.random() < 0.5 else float(xc + rng.uniform(15, 40))
        P["carpark_area"].append(w.rect(a, a + 36.0, ROAD_HALF + WALK_W, ROAD_HALF + WALK_W + 18.0))
    w.polygons, w.lines = P, L


# ------------------------------------------------------------------------------------------------ objects


def _add(w: SceneWorld, rng, category: str, s: float, d: float, heading_rel: float, speed: float, attribute):
    wlh = np.array(CATEGORY_LOOK[category][0]) * rng.uniform(0.9, 1.1, size=3)
    yaw = w.heading + heading_rel
    xy = w.to_global(s, d)
    vel = np.array([np.cos(yaw), np.sin(yaw), 0.0]) * speed
    w.instances.append(Instance(category, tuple(float(v) for v in wlh), np.array([xy[0], xy[1], wlh[2] / 2]), vel,
                                float(np.arctan2(np.sin(yaw), np.cos(yaw))), attribute))


def _place_objects(w: SceneWorld, rng: np.random.Generator, travel: float) -> None:
    xc = w.cross_s
    lo, hi = -55.0, travel + 60.0
    # Cars dominate as on real roads, but every detection class is common enough to show up in most scenes (a demo
    # trains on a few dozen samples: a class seen once is a class it cannot learn, and nuScenes mAP averages all
    # ten). Nothing guarantees each class in each scene (with seed 0, 6 of the 10 mini scenes show all ten); each
    # split shows all ten (`plan_split`).
    vehicles = (["vehicle.car"] * 8 + ["vehicle.truck"] * 3 + ["vehicle.motorcycle"] * 3 + ["vehicle.trailer"] * 2
                + ["vehicle.bus.rigid"] * 2 + ["vehicle.bus.bendy", "vehicle.construction", "vehicle.construction"])
    # Road works closing the oncoming kerb lane within 30 m of the ego's path (where nuScenes evaluates barriers
    # and cones): a row of barriers along the lane's inner edge, a construction vehicle behind them, and cones
    # tapering back to the kerb ahead of the closure, where the oncoming traffic meets it.
    works = None
    if rng.random() < 0.9:
        s0 = float(rng.uniform(-20.0, max(-19.0, xc - 30)))
        n = int(rng.integers(3, 7))
        s1 = s0 + 2.8 * (n - 1)
        for k in range(n):
            _add(w, rng, "movable_object.barrier", s0 + 2.8 * k, LANE_W + 0.4, np.pi / 2, 0.0, None)
        if rng.random() < 0.6:
            _add(w, rng, "vehicle.construction", (s0 + s1) / 2, 1.5 * LANE_W + 0.5,
                 float(rng.choice([0.0, np.pi])), 0.0, "vehicle.parked")
        cones = int(rng.integers(2, 5))
        for k in range(cones):
            _add(w, rng, "movable_object.trafficcone", s1 + 3.0 + 2.5 * k, LANE_W + 0.4 + 0.7 * k, 0.0, 0.0, None)
        works = (s0 - 2.0, s1 + 3.0 + 2.5 * cones)
    duration = (w.samples - 1) * SAMPLE_PERIOD_S + w.sweeps * SWEEP_PERIOD_S
    # Lanes: d < 0 drive along +s, d > 0 along -s; vehicles of one lane share a speed, so they never collide.
    for d in (-5.25, -1.75, 1.75, 5.25):
        direction = 1.0 if d < 0 else -1.0
        speed = w.ego_speed if d == -1.75 else float(rng.choice([0.0, rng.uniform(3, 12)], p=[0.25, 0.75]))
        s = lo + rng.uniform(0, 15)
        while s < hi:
            cat = vehicles[int(rng.integers(len(vehicles)))]
            length = CATEGORY_LOOK[cat][0][1] * 1.1
            centre = s + length / 2
            closed = (d == 5.25 and works is not None
                      and works[0] - length / 2 - 2 < centre < works[1] + length / 2 + 2 + speed * duration)
            if not closed and not (d == -1.75 and abs(centre) < 9 + length / 2):  # keep the ego's own spot free
                attr = "vehicle.moving" if speed > 0 else "vehicle.stopped"
                _add(w, rng, cat, centre, d + rng.uniform(-0.2, 0.2), 0.0 if direction > 0 else np.pi,
                     speed, attr)
            s += length + rng.uniform(4, 25)
    # Vehicles waiting on both arms of the cross road.
    for sign in (-1, 1):
        for k in range(int(rng.integers(1, 4))):
            lane_off = -1.75 * sign
            _add(w, rng, "vehicle.car", xc + lane_off, sign * (ROAD_HALF + 9 + 7 * k), -sign * np.pi / 2, 0.0,
                 "vehicle.stopped")
    # Cyclists on the kerb side of the ego's direction (the other kerb has the road works); one speed, no overtaking.
    speed = float(rng.uniform(2, 6))
    for s in np.sort(rng.uniform(lo, hi, int(rng.integers(1, 4)))):
        _add(w, rng, "vehicle.bicycle", float(s), -6.55, 0.0, speed, "cycle.with_rider")
    for _ in range(int(rng.integers(1, 4))):  # parked bicycles and motorcycles on the walkway
        side = float(rng.choice([-1, 1]))
        _add(w, rng, "vehicle.bicycle", rng.uniform(lo, xc - 15), side * (ROAD_HALF + WALK_W - 0.5), np.pi / 2, 0.0,
             "cycle.without_rider")
    for _ in range(int(rng.integers(1, 3))):
        side = float(rng.choice([-1, 1]))
        _add(w, rng, "vehicle.motorcycle", rng.uniform(-25.0, 25.0), side * (ROAD_HALF + WALK_W - 0.8), np.pi / 2,
             0.0, "cycle.without_rider")
    # Pedestrians on the walkways and on a crossing.
    walkers = ["human.pedestrian.adult"] * 6 + ["human.pedestrian.child", "human.pedestrian.construction_worker",
                                                 "human.pedestrian.police_officer"]
    for _ in range(int(rng.integers(5, 11))):
        side = float(rng.choice([-1, 1]))
        moving = rng.random() < 0.7
        cat = walkers[int(rng.integers(len(walkers)))]
        s = float(rng.uniform(lo, hi))
        if abs(s - xc) < ROAD_HALF + WALK_W + 1:
            s = xc - 15
        _add(w, rng, cat, s, side * (ROAD_HALF + rng.uniform(0.6, WALK_W - 0.6)), float(rng.choice([0.0, np.pi])),
             float(rng.uniform(0.8, 1.6)) if moving else 0.0, "pedestrian.moving" if moving else "pedestrian.standing")
    for _ in range(int(rng.integers(0, 3))):
        _add(w, rng, "human.pedestrian.adult", xc - ROAD_HALF - 3.0 + rng.uniform(-1, 1), rng.uniform(-6, 6),
             float(rng.choice([np.pi / 2, -np.pi / 2])), float(rng.uniform(0.8, 1.4)), "pedestrian.moving")
    for _ in range(int(rng.integers(1, 4))):
        _add(w, rng, "movable_object.trafficcone", rng.uniform(-30.0, travel + 30), 6.85, 0.0, 0.0, None)
    for _ in range(int(rng.integers(0, 3))):  # bins: annotated, but no detection class
        side = float(rng.choice([-1, 1]))
        _add(w, rng, "movable_object.pushable_pullable", rng.uniform(lo, hi), side * (ROAD_HALF + WALK_W - 0.4),
             0.0, 0.0, None)
    # Parked cars in the car park, nose in.
    for poly in w.polygons["carpark_area"]:
        e = np.array([np.cos(w.heading), np.sin(w.heading)])
        a = float((poly[0] - w.origin) @ e)
        for k in range(int(rng.integers(3, 10))):
            if rng.random() < 0.75:
                _add(w, rng, "vehicle.car", a + 2 + 3.0 * k, ROAD_HALF + WALK_W + 3.5, np.pi / 2, 0.0, "vehicle.parked")


def _place_clutter(w: SceneWorld, rng: np.random.Generator, travel: float) -> None:
    boxes, colours = [], []
    xc = w.cross_s
    carparks = [(float((p[0] - w.origin) @ [np.cos(w.heading), np.sin(w.heading)])) for p in w.polygons["carpark_area"]]

    def add(s, d, l, wd, h, rel, rgb):
        xy = w.to_global(s, d)
        boxes.append([xy[0], xy[1], h / 2, l, wd, h, w.heading + rel])
        colours.append(rgb)

    # Buildings behind the walkways (not over the cross road or the car park).
    for side in (-1, 1):
        s = -110.0
        while s < travel + 110:
            length = float(rng.uniform(10, 28))
            mid = s + length / 2
            blocked = abs(mid - xc) < ROAD_HALF + WALK_W + length / 2 + 1
            if side > 0:
                blocked |= any(a - length / 2 - 1 < mid < a + 36 + length / 2 + 1 for a in carparks)
            if not blocked:
                depth = float(rng.uniform(8, 15))
                shade = rng.uniform(0.6, 1.0)
                add(mid, side * (ROAD_HALF + WALK_W + 1.0 + depth / 2), length - 1.0, depth, float(rng.uniform(6, 20)),
                    0.0, (int(200 * shade), int(185 * shade), int(160 * shade)))
            s += length
    # Poles along the kerbs.
    for side in (-1, 1):
        for s in np.arange(-100.0, travel + 100, float(rng.uniform(18, 30))):
            if abs(s - xc) > ROAD_HALF + WALK_W:
                add(float(s), side * (ROAD_HALF + 0.4), 0.25, 0.25, 5.0, 0.0, (70, 70, 70))
    w.clutter = np.array(boxes, float).reshape(-1, 7)
    w.clutter_rgb = np.array(colours, float).reshape(-1, 3)
