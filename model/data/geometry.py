"""Small rigid-geometry helpers shared by the generator and the loader (numpy only).

Quaternions follow nuScenes: [w, x, y, z]. Boxes in the loader are `[x, y, z, l, w, h, yaw]` with (x, y, z) the
box centre and `l` along the heading; nuScenes tables store sizes as [w, l, h].
"""

from __future__ import annotations

import numpy as np


def quat_to_rot(q) -> np.ndarray:
    w, x, y, z = (float(v) for v in q)
    n = w * w + x * x + y * y + z * z
    s = 2.0 / n if n > 0 else 0.0
    return np.array(
        [
            [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
            [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
            [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
        ]
    )


def quats_to_rots(q) -> np.ndarray:
    """[M, 4] quaternions → [M, 3, 3] rotation matrices."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def rigid_inv(m: np.ndarray) -> np.ndarray:
    """Inverse of [..., 4, 4] rotation + translation transforms (no LAPACK, see `affine_inv`)."""
    rt = np.swapaxes(m[..., :3, :3], -1, -2)
    out = np.zeros(m.shape)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ m[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def affine_inv(m: np.ndarray) -> np.ndarray:
    """Inverse of a 4×4 affine transform in closed form.

    numpy's LAPACK inverse hands even a 4×4 to OpenBLAS threads, which on a busy machine costs milliseconds.
    """
    a = m[:3, :3]
    c0, c1, c2 = a[:, 0], a[:, 1], a[:, 2]
    adj = np.stack([np.cross(c1, c2), np.cross(c2, c0), np.cross(c0, c1)])
    inv = adj / float(c0 @ adj[0])
    out = np.eye(4)
    out[:3, :3] = inv
    out[:3, 3] = -inv @ m[:3, 3]
    return out


def det3(a: np.ndarray) -> float:
    return float(a[:, 0] @ np.cross(a[:, 1], a[:, 2]))


def yaw_to_quat(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def transform(rotation, translation) -> np.ndarray:
    """4×4 from a quaternion (or 3×3 matrix) and a translation."""
    m = np.eye(4)
    r = np.asarray(rotation, dtype=np.float64)
    m[:3, :3] = quat_to_rot(r) if r.shape == (4,) else r
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4×4 transform to [N, 3] points."""
    return pts @ m[:3, :3].T + m[:3, 3]


def yaw_of(rot3: np.ndarray) -> float:
    """Heading of a rotation's x axis in the xy plane."""
    return float(np.arctan2(rot3[1, 0], rot3[0, 0]))


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """[M, 7] boxes → [M, 8, 3] corners (bottom four first, counter-clockwise from +x+y)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    sx = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    local = np.stack(
        [sx[None] * boxes[:, 3:4], sy[None] * boxes[:, 4:5], sz[None] * boxes[:, 5:6]], axis=-1
    )  # [M, 8, 3]
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    x = local[..., 0] * c[:, None] - local[..., 1] * s[:, None]
    y = local[..., 0] * s[:, None] + local[..., 1] * c[:, None]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """[P, M] bool: point inside a yaw-rotated box (boundary inclusive, grown by `margin`)."""
    points = np.asarray(points)[:, :3]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((len(points), len(boxes)), dtype=bool)
    for m, b in enumerate(boxes):
        # Cheap circle test first: most points are far from any one box.
        r = np.hypot(b[3], b[4]) / 2 + margin
        dx = points[:, 0] - b[0]
        dy = points[:, 1] - b[1]
        cand = np.flatnonzero((np.abs(dx) <= r) & (np.abs(dy) <= r))
        if not len(cand):
            continue
        c, s = np.cos(b[6]), np.sin(b[6])
        lx = dx[cand] * c + dy[cand] * s
        ly = -dx[cand] * s + dy[cand] * c
        lz = points[cand, 2] - b[2]
        inside = (np.abs(lx) <= b[3] / 2 + margin) & (np.abs(ly) <= b[4] / 2 + margin) & (np.abs(lz) <= b[5] / 2 + margin)
        out[cand[inside], m] = True
    return out
