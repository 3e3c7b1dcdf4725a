"""BEV map masks from the nuScenes map expansion, in the (augmented) LiDAR frame.

Geometry comes from the devkit (`NuScenesMap.get_map_geom`, patch rotated to the LiDAR heading); rasterising is
done here so the 3D augmentation (rotation, scale, flips, translation) is applied to the polygons exactly and lines
split into several pieces by the patch are handled. Cell `[i, j]` is x = xmin + (i + .5)·res, y = ymin + (j + .5)·res.
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


def rasterise(map_api, lidar2global: np.ndarray, lidar_aug: np.ndarray, map_bound, classes) -> np.ndarray:
    """[C, X, Y] uint8 masks around the ego for `classes` (map class names)."""
    import cv2

    (x0, x1, rx), (y0, y1, ry) = parse_map_bound(map_bound)
    nx, ny = grid_shape(map_bound)
    out = np.zeros((len(classes), nx, ny), np.uint8)
    # The grid lives in the augmented frame; find the patch (in the un-augmented LiDAR frame) that covers it.
    aug_inv = np.linalg.inv(lidar_aug)
    grid_corners = np.array([[x0, y0, 0, 1], [x1, y0, 0, 1], [x1, y1, 0, 1], [x0, y1, 0, 1]], float)
    half = float(np.abs((grid_corners @ aug_inv.T)[:, :2]).max()) + 1.0
    yaw = float(np.arctan2(lidar2global[1, 0], lidar2global[0, 0]))
    centre = lidar2global[:2, 3]
    layers = sorted({layer for c in classes for layer in LAYERS_OF.get(c, (c,))})
    geoms = dict(map_api.get_map_geom((centre[0], centre[1], 2 * half, 2 * half), np.degrees(yaw), layers))
    # get_map_geom returns the patch rotated by -yaw about its centre, i.e. LiDAR-frame x, y up to the sensor's
    # small roll/pitch; then apply the augmentation's planar part and map to (column = j, row = i) pixels.
    a = lidar_aug[:2, :2]
    t = lidar_aug[:2, 3]
    # pixel (u=j, v=i) continuous coordinates with cell centres on integers
    to_px = np.array([[0.0, 1.0 / ry], [1.0 / rx, 0.0]])
    off = np.array([-y0 / ry - 0.5, -x0 / rx - 0.5])
    for c, name in enumerate(classes):
        canvas = out[c]
        for layer in LAYERS_OF.get(name, (name,)):
            for geom in geoms.get(layer, []):
                for part in getattr(geom, "geoms", [geom]):
                    if part.is_empty:
                        continue
                    if part.geom_type == "Polygon":
                        rings = [np.asarray(part.exterior.coords)] + [np.asarray(r.coords) for r in part.interiors]
                        pix = [_px(r, a, t, to_px, off) for r in rings]
                        cv2.fillPoly(canvas, pix[:1], 1, cv2.LINE_8, _SHIFT)
                        if len(pix) > 1:
                            cv2.fillPoly(canvas, pix[1:], 0, cv2.LINE_8, _SHIFT)
                    elif part.geom_type == "LineString":
                        cv2.polylines(canvas, [_px(np.asarray(part.coords), a, t, to_px, off)], False, 1, 2,
                                      cv2.LINE_8, _SHIFT)
    return out


def _px(xy: np.ndarray, a, t, to_px, off) -> np.ndarray:
    p = xy[:, :2] @ a.T + t
    uv = p @ to_px.T + off
    return np.round(uv * (1 << _SHIFT)).astype(np.int32)
