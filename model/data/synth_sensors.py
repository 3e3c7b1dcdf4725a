"""Simulated sensors for the synthetic scenes: a ray-cast 32-beam LiDAR and flat-shaded camera images.

Both see the same world (ground plane, map paint, annotated boxes, buildings and poles) through the real rig
calibration, so LiDAR points fall inside the annotated boxes and the boxes project where the camera shows them.
"""

from __future__ import annotations

import functools

import numpy as np

from model.data.geometry import apply, rigid_inv
from model.data.rig import IMAGE_HEIGHT, IMAGE_WIDTH, LIDAR_BEAMS, LIDAR_ELEVATION_DEG

MAX_RANGE = 75.0
AZIMUTH_STEPS = 720  # 0.5° (the real sensor has ~0.33°; fewer points keep CPU training quick)
_ELEV = np.radians(np.linspace(LIDAR_ELEVATION_DEG[0], LIDAR_ELEVATION_DEG[1], LIDAR_BEAMS))


class GroundSurface:
    """What a LiDAR return off the ground looks like where it lands: its height and reflectivity per map layer.

    As on real roads, the paint of lane and road dividers, ped crossings and stop lines is retroreflective (bright
    returns) and walkways sit on a kerb; plain asphalt, car-park surface and terrain are dark. Without this the map
    layers would be visible to the cameras only.
    """

    ASPHALT = 8.0
    KERB_HEIGHT = 0.15
    LAYERS = (  # later wins: (layer, intensity, height above the road in metres)
        ("carpark_area", 12.0, 0.0),
        ("walkway", 18.0, KERB_HEIGHT),
        ("ped_crossing", 60.0, 0.0),
        ("stop_line", 65.0, 0.0),
    )

    def __init__(self, polygons: dict[str, list[np.ndarray]], lines: dict[str, list[np.ndarray]]):
        import shapely
        from shapely.geometry import LineString, Polygon

        self._shapely = shapely
        self._layers = []
        for layer, inten, height in self.LAYERS:
            geoms = [Polygon(p) for p in polygons.get(layer, []) if len(p) >= 3]
            if geoms:
                self._layers.append((shapely.union_all(geoms), inten, height))
        paint = [LineString(line).buffer(LINE_PAINT[layer][1] / 2 + 0.05) for layer in LINE_PAINT
                 for line in lines.get(layer, []) if len(line) >= 2]
        if paint:
            self._layers.append((shapely.union_all(paint), 55.0, 0.0))
        for geom, _, _ in self._layers:
            shapely.prepare(geom)  # contains_xy on a prepared geometry is an index lookup, not a full scan

    def at(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, 2] global ground points -> (intensity [N], height [N])."""
        inten = np.full(len(xy), self.ASPHALT)
        height = np.zeros(len(xy))
        for geom, value, h in self._layers:
            inside = self._shapely.contains_xy(geom, xy[:, 0], xy[:, 1])
            inten[inside] = value
            height[inside] = h
        return inten, height


def cast_lidar(lidar2global: np.ndarray, boxes: np.ndarray, intensity: np.ndarray, rng: np.random.Generator,
               ground: GroundSurface | None = None):
    """One LiDAR revolution.

    boxes: [B, 7] global boxes (annotated first, then clutter); intensity: [B]; ground: the map's surface (None: a
    flat, uniformly dark ground).
    Returns points [P, 5] float32 in the LiDAR frame (x, y, z, intensity, ring) and hit [P] (box index or -1).
    """
    az = np.linspace(0, 2 * np.pi, AZIMUTH_STEPS, endpoint=False) + rng.uniform(0, 2 * np.pi / AZIMUTH_STEPS)
    el, azg = np.meshgrid(_ELEV, az, indexing="ij")  # [beams, columns]
    local = np.stack([np.cos(el) * np.cos(azg), np.cos(el) * np.sin(azg), np.sin(el)], -1)
    dirs = local @ lidar2global[:3, :3].T  # [beams, columns, 3]
    origin = lidar2global[:3, 3]

    t_best = np.full(el.shape, np.inf)
    hit = np.full(el.shape, -1, dtype=np.int64)
    down = dirs[..., 2] < -1e-6
    t_best[down] = -origin[2] / dirs[down, 2]
    ground_inten = np.full(el.shape, GroundSurface.ASPHALT)
    if ground is not None and down.any():
        xy = origin[:2] + dirs[down, :2] * t_best[down, None]
        inten_g, height = ground.at(xy)
        # A raised surface (the kerb) is hit a little earlier along the same ray.
        t_best[down] = (height - origin[2]) / dirs[down, 2]
        ground_inten[down] = inten_g

    # Ray / oriented-box slab tests, each box only against the columns that can see it.
    col_az = np.arctan2(dirs[LIDAR_BEAMS // 2, :, 1], dirs[LIDAR_BEAMS // 2, :, 0])
    margin = np.radians(3.0)  # the sensor's small tilt bends columns a little away from constant azimuth
    rel_all = boxes[:, :2] - origin[:2]
    dist = np.linalg.norm(rel_all, axis=1)
    corners = _corners_xy(boxes)
    for b in np.flatnonzero(dist < MAX_RANGE + 10):
        box = boxes[b]
        centre_az = np.arctan2(rel_all[b, 1], rel_all[b, 0])
        rel = corners[b] - origin[:2]
        if np.min(np.abs(rel).max(1)) < 1e-3 or dist[b] < np.hypot(box[3], box[4]) / 2:
            cols = np.arange(AZIMUTH_STEPS)
        else:
            off = _wrap(np.arctan2(rel[:, 1], rel[:, 0]) - centre_az)
            d = _wrap(col_az - centre_az)
            cols = np.flatnonzero((d >= off.min() - margin) & (d <= off.max() + margin))
        if not len(cols):
            continue
        dv = dirs[:, cols]  # [beams, k, 3]
        c, s_ = np.cos(box[6]), np.sin(box[6])
        o = origin - box[:3]
        o_loc = np.array([o[0] * c + o[1] * s_, -o[0] * s_ + o[1] * c, o[2]])
        d_loc = np.stack([dv[..., 0] * c + dv[..., 1] * s_, -dv[..., 0] * s_ + dv[..., 1] * c, dv[..., 2]], -1)
        half = box[3:6] / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(d_loc) < 1e-12, 1e-12, d_loc)
            t1 = (-half - o_loc) * inv
            t2 = (half - o_loc) * inv
        tmin = np.minimum(t1, t2).max(-1)
        tmax = np.maximum(t1, t2).min(-1)
        ok = (tmax >= tmin) & (tmin > 0)
        sub_t = t_best[:, cols]
        better = ok & (tmin < sub_t)
        if better.any():
            sub_t[better] = tmin[better]
            t_best[:, cols] = sub_t
            sub_h = hit[:, cols]
            sub_h[better] = b
            hit[:, cols] = sub_h

    ring = np.broadcast_to(np.arange(LIDAR_BEAMS)[:, None], el.shape).ravel()
    t_best, hit, dirs = t_best.ravel(), hit.ravel(), dirs.reshape(-1, 3)
    keep = t_best < MAX_RANGE
    keep &= rng.random(len(keep)) > 0.05  # dropped returns
    t = t_best[keep]
    hit = hit[keep]
    on_box = hit >= 0
    # Range noise; box returns are nudged inwards so they stay inside the (annotated) box.
    t = t + np.where(on_box, rng.uniform(0.005, 0.03, len(t)), rng.normal(0, 0.015, len(t)))
    pts_global = origin + dirs[keep] * t[:, None]
    inten = np.where(on_box, intensity[np.maximum(hit, 0)], ground_inten.ravel()[keep]) + rng.normal(0, 3, len(t))
    pts = np.empty((len(t), 5), np.float32)
    pts[:, :3] = apply(rigid_inv(lidar2global), pts_global)
    pts[:, 3] = np.clip(inten, 0, 255)
    pts[:, 4] = ring[keep]
    return pts, hit


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def _corners_xy(boxes: np.ndarray) -> np.ndarray:
    """[B, 4, 2] footprint corners of yaw-rotated boxes."""
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    hl, hw = boxes[:, 3] / 2, boxes[:, 4] / 2
    sx = np.array([1, -1, -1, 1])
    sy = np.array([1, 1, -1, -1])
    x = sx * hl[:, None]
    y = sy * hw[:, None]
    return np.stack([x * c[:, None] - y * s[:, None], x * s[:, None] + y * c[:, None]], -1) + boxes[:, None, :2]


# ------------------------------------------------------------------------------------------------ camera

SKY = (200, 215, 230)
TERRAIN = (95, 110, 80)
PAINT = {
    "walkway": (170, 165, 155),
    "carpark_area": (95, 95, 100),
    "drivable_area": (70, 70, 75),
    "ped_crossing": (230, 230, 230),
    "stop_line": (245, 245, 245),
}
LINE_PAINT = {"road_divider": ((240, 200, 40), 0.3), "lane_divider": ((235, 235, 235), 0.15)}
_NEAR = 0.5
# Box faces as corner indices (see geometry.box_corners) and a brightness per face for flat shading.
_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7))
_SHADE = (0.5, 1.0, 0.85, 0.7, 0.6, 0.75)


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman clip of a camera-frame polygon [N, 3] against z ≥ _NEAR."""
    inside = poly[:, 2] >= _NEAR
    if inside.all():
        return poly
    if not inside.any():
        return poly[:0]
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ia, ib = a[2] >= _NEAR, b[2] >= _NEAR
        if ia:
            out.append(a)
        if ia != ib:
            f = (_NEAR - a[2]) / (b[2] - a[2])
            out.append(a + f * (b - a))
    return np.array(out)


def _fill(img, cv2, poly_cam: np.ndarray, K: np.ndarray, rgb) -> None:
    poly = _clip_near(poly_cam)
    if len(poly) < 3:
        return
    uv = poly[:, :2] / poly[:, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    if (uv[:, 0].max() < 0 or uv[:, 0].min() > IMAGE_WIDTH or uv[:, 1].max() < 0 or uv[:, 1].min() > IMAGE_HEIGHT):
        return
    uv = np.clip(uv, -1e5, 1e5)
    cv2.fillPoly(img, [np.round(uv * 4).astype(np.int32)], tuple(int(v) for v in rgb[::-1]), cv2.LINE_AA, 2)


def _ground(xy: np.ndarray) -> np.ndarray:
    return np.concatenate([xy, np.zeros((len(xy), 1))], 1)


def _strip(line: np.ndarray, width: float) -> list[np.ndarray]:
    """A polyline painted as thin ground quads, split into ≤10 m pieces so near-plane clipping stays accurate."""
    quads = []
    for a, b in zip(line[:-1], line[1:]):
        seg = b - a
        length = float(np.linalg.norm(seg))
        if length == 0:
            continue
        n = np.array([-seg[1], seg[0]]) / length * width / 2
        k = max(1, int(np.ceil(length / 10)))
        for i in range(k):
            p, q = a + seg * i / k, a + seg * (i + 1) / k
            quads.append(np.array([p - n, q - n, q + n, p + n]))
    return quads


def _tile(poly: np.ndarray, step: float = 20.0) -> list[np.ndarray]:
    """Cut a large rectangle-ish ground polygon into tiles so perspective clipping stays well conditioned."""
    from shapely.geometry import Polygon, box

    shape = Polygon(poly)
    x0, y0, x1, y1 = shape.bounds
    out = []
    for x in np.arange(x0, x1, step):
        for y in np.arange(y0, y1, step):
            piece = shape.intersection(box(x, y, x + step, y + step))
            for g in getattr(piece, "geoms", [piece]):
                if g.geom_type == "Polygon" and not g.is_empty:
                    out.append(np.asarray(g.exterior.coords)[:-1])
    return out


class Painter:
    """Renders the six camera images of one key frame. Ground paint is prepared once per scene."""

    def __init__(self, world):
        self.ground: list[tuple[np.ndarray, tuple]] = []
        for layer in ("walkway", "carpark_area", "drivable_area", "ped_crossing", "stop_line"):
            for poly in world.polygons.get(layer, []):
                for tile in _tile(poly):
                    self.ground.append((_ground(tile), PAINT[layer]))
        for layer, (rgb, width) in LINE_PAINT.items():
            for line in world.lines.get(layer, []):
                for q in _strip(line, width):
                    self.ground.append((_ground(q), rgb))
        self._centres = _ground(np.array([g[0][:, :2].mean(0) for g in self.ground]).reshape(-1, 2))
        self._radius = np.array([np.linalg.norm(g[0][:, :2] - g[0][:, :2].mean(0), axis=1).max() for g in self.ground])

    def render(self, cv2, global2cam: np.ndarray, K: np.ndarray, cam_pos: np.ndarray, boxes: np.ndarray,
               colours: np.ndarray) -> np.ndarray:
        from model.data.geometry import box_corners

        img = _terrain_image().copy()
        # Sky above the horizon: pixels whose viewing ray points upwards (the ground's vanishing line).
        line = np.array([[1 / K[0, 0], 0, 0], [0, 1 / K[1, 1], 0], [-K[0, 2] / K[0, 0], -K[1, 2] / K[1, 1], 1]]) @ (global2cam[:3, :3] @ np.array([0.0, 0.0, 1.0]))
        if abs(line[1]) > 1e-9:
            v0 = -(line[2]) / line[1]
            v1 = -(line[0] * IMAGE_WIDTH + line[2]) / line[1]
            sky = np.array([[0, v0], [IMAGE_WIDTH, v1], [IMAGE_WIDTH, -1e4], [0, -1e4]])
            cv2.fillPoly(img, [np.round(np.clip(sky, -1e4, 1e4) * 4).astype(np.int32)], SKY[::-1], cv2.LINE_AA, 2)
        half_fov = (IMAGE_WIDTH / 2 + 50) / K[0, 0]
        for i in _visible(apply(global2cam, self._centres), self._radius, half_fov):
            poly, rgb = self.ground[i]
            _fill(img, cv2, apply(global2cam, poly), K, rgb)
        # Boxes, far to near (painter's algorithm); only faces turned to the camera.
        radius = np.linalg.norm(boxes[:, 3:6], axis=1) / 2
        vis = _visible(apply(global2cam, boxes[:, :3]), radius, half_fov)
        vis = vis[np.argsort(-np.linalg.norm(boxes[vis, :2] - cam_pos[:2], axis=1))]
        if not len(vis):
            return img
        corners = box_corners(boxes[vis])  # [V, 8, 3]
        faces = corners[:, _FACE_IDX]  # [V, 6, 4, 3]
        face_centre = faces.mean(2)
        facing = np.einsum("vfk,vfk->vf", face_centre - corners.mean(1)[:, None], cam_pos - face_centre) > 0
        cam_faces = apply(global2cam, faces.reshape(-1, 3)).reshape(faces.shape)
        for v, i in enumerate(vis):
            for f in np.flatnonzero(facing[v]):
                _fill(img, cv2, cam_faces[v, f], K, np.asarray(colours[i]) * _SHADE[f])
        return img


_FACE_IDX = np.array(_FACES)


@functools.lru_cache(maxsize=1)
def _terrain_image() -> np.ndarray:
    """The empty BGR frame every render starts from (a copy of it is much cheaper than filling every pixel from a
    colour tuple, and this was the largest part of a render)."""
    img = np.empty((IMAGE_HEIGHT, IMAGE_WIDTH, 3), np.uint8)
    img[:] = TERRAIN[::-1]
    img.flags.writeable = False  # renders copy it
    return img


def _visible(centres_cam: np.ndarray, radius: np.ndarray, half_fov: float, max_depth: float = 150.0) -> np.ndarray:
    """Indices of bounding spheres that can touch the camera's horizontal field of view."""
    z = centres_cam[:, 2]
    ok = (z + radius > _NEAR) & (z - radius < max_depth)
    ok &= np.abs(centres_cam[:, 0]) - radius * 1.5 < np.maximum(z + radius, 0) * half_fov
    return np.flatnonzero(ok)
