"""BEV map masks from the nuScenes map expansion, in the (augmented) LiDAR frame.

Geometry comes from the devkit's `NuScenesMap` (records → shapely polygons/lines, indexed per layer); rasterising
is done here so the 3D augmentation (rotation, scale, flips, translation) is applied to the polygons exactly and
lines split into several pieces by the patch are handled (the devkit's own mask code fails on those with shapely 2). Cell `[i, j]` is x = xmin + (i + .5)·res, y = ymin + (j + .5)·res.
`divider` is road_divider ∪ lane_divider, drawn 2 cells wide like BEVFusion's LoadBEVSegmentation.
"""

from __future__ import annotations

import numpy as np

LAYERS_OF = {"divider": ("road_divider", "lane_divider")}
_SHIFT = 3  # sub-pixel bits for cv2 drawing


def parse_map_bound(map_bound) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """`[xmin, xmax, res]` (same for y) or `[[xmin, xmax, res], [ymin, ymax, res]]`."""
    mb = np.asarray(map_bound, dtype=np.float64)
    if mb.shape == (3,):
        return tuple(mb), tuple(mb)
    if mb.shape == (2, 3):
        return tuple(mb[0]), tuple(mb[1])
    raise ValueError(f"map_bound must be [xmin, xmax, res] or two of them, got {map_bound!r}")


def grid_shape(map_bound) -> tuple[int, int]:
    (x0, x1, rx), (y0, y1, ry) = parse_map_bound(map_bound)
    return int(round((x1 - x0) / rx)), int(round((y1 - y0) / ry))


class MapIndex:
    """The map layers of one location as shapely geometries (read through `NuScenesMap`) in an STRtree.

    `NuScenesMap.get_map_geom` intersects every record of a layer with the patch; on the real maps (thousands of
    lanes and polygons) that costs far more per sample than the rest of the loading, so candidates are found through
    a spatial index first. Built lazily, once per worker and location.
    """

    def __init__(self, map_api):
        self.map_api = map_api
        self._layers: dict = {}

    def _layer(self, layer: str):
        if layer not in self._layers:
            from shapely.strtree import STRtree

            api = self.map_api
            geoms = []
            for record in getattr(api, layer):
                if layer == "drivable_area":
                    geoms += [api.extract_polygon(t) for t in record["polygon_tokens"]]
                elif "polygon_token" in record:
                    geoms.append(api.extract_polygon(record["polygon_token"]))
                else:
                    geoms.append(api.extract_line(record["line_token"]))
            # A few polygons of the real maps self-intersect; repair rather than drop them (drivable area above all).
            from shapely.validation import make_valid

            geoms = [g if g.is_valid else make_valid(g) for g in geoms if not g.is_empty]
            self._layers[layer] = (geoms, STRtree(geoms) if geoms else None)
        return self._layers[layer]

    def query(self, layer: str, patch):
        geoms, tree = self._layer(layer)
        if tree is None:
            return []
        out = []
        for i in tree.query(patch):
            g = geoms[int(i)].intersection(patch)
            if not g.is_empty:
                out.append(g)
        return out


def rasterise(map_index: MapIndex, lidar2global: np.ndarray, lidar_aug: np.ndarray, map_bound, classes) -> np.ndarray:
    """[C, X, Y] uint8 masks around the ego for `classes` (map class names)."""
    import cv2
    from shapely.geometry import Polygon

    from model.data.geometry import affine_inv

    (x0, x1, rx), (y0, y1, ry) = parse_map_bound(map_bound)
    nx, ny = grid_shape(map_bound)
    out = np.zeros((len(classes), nx, ny), np.uint8)
    # The grid lives in the augmented frame; the patch is its footprint in the global frame (a rotated square).
    aug_inv = affine_inv(lidar_aug)
    grid_corners = np.array([[x0, y0, 0, 1], [x1, y0, 0, 1], [x1, y1, 0, 1], [x0, y1, 0, 1]], float)
    half = float(np.abs((grid_corners @ aug_inv.T)[:, :2]).max()) + 1.0
    yaw = float(np.arctan2(lidar2global[1, 0], lidar2global[0, 0]))
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s], [s, c]])  # LiDAR heading in the map (roll/pitch of the sensor are ignored, as usual)
    centre = lidar2global[:2, 3]
    square = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    patch = Polygon(square @ rot.T + centre)
    # global xy → LiDAR xy → augmented xy → pixel (u = column = j along y, v = row = i along x), cell centres on integers
    a = lidar_aug[:2, :2] @ rot.T
    t = lidar_aug[:2, :2] @ (-rot.T @ centre) + lidar_aug[:2, 3]
    to_px = np.array([[0.0, 1.0 / ry], [1.0 / rx, 0.0]])
    a, t = to_px @ a, to_px @ t + np.array([-y0 / ry - 0.5, -x0 / rx - 0.5])
    for k, name in enumerate(classes):
        canvas = out[k]
        for layer in LAYERS_OF.get(name, (name,)):
            for geom in map_index.query(layer, patch):
                for part in _parts(geom):
                    if part.geom_type == "Polygon":
                        cv2.fillPoly(canvas, [_px(np.asarray(part.exterior.coords), a, t)], 1, cv2.LINE_8, _SHIFT)
                        holes = [_px(np.asarray(r.coords), a, t) for r in part.interiors]
                        if holes:
                            cv2.fillPoly(canvas, holes, 0, cv2.LINE_8, _SHIFT)
                    elif part.geom_type == "LineString":
                        cv2.polylines(canvas, [_px(np.asarray(part.coords), a, t)], False, 1, 2, cv2.LINE_8, _SHIFT)
    return out


def _parts(geom):
    """Polygons and line strings of a (possibly nested multi-part) shapely geometry."""
    if geom.is_empty:
        return
    if hasattr(geom, "geoms"):
        for g in geom.geoms:
            yield from _parts(g)
    elif geom.geom_type in ("Polygon", "LineString"):
        yield geom
    elif geom.geom_type == "LinearRing":
        from shapely.geometry import LineString

        yield LineString(geom.coords)


def _px(xy: np.ndarray, a, t) -> np.ndarray:
    return np.round((xy[:, :2] @ a.T + t) * (1 << _SHIFT)).astype(np.int32)
