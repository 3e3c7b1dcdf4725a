"""Augmentation as BEVFusion does it, expressed as matrices.

Image: resize, crop, horizontal flip, rotation about the crop centre → one affine applied with a single
`cv2.warpAffine` and recorded in `img_aug_matrix` (uv_aug = M[:2, :2] @ uv + M[:2, 3]).
3D: rotation about z, scale, translation, then flips → `lidar_aug_matrix`, applied to points, boxes (centre, size,
yaw, velocity) and used for the map masks. Eval mode: a fixed resize/centre crop and an identity 3D transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.data.geometry import det3

# The original's numbers are for 1600×900 → 704 wide: resize [0.38, 0.55] (test 0.48). They scale with the width.
_REF_WIDTH = 704


@dataclass
class AugConfig:
    resize_lim: tuple[float, float] = (0.38, 0.55)
    resize_test: float = 0.48
    bot_pct_lim: tuple[float, float] = (0.0, 0.0)
    rot_lim_deg: tuple[float, float] = (-5.4, 5.4)
    image_flip: bool = True
    global_rot: tuple[float, float] = (-0.785, 0.785)
    global_scale: tuple[float, float] = (0.9, 1.1)
    global_translate_std: float = 0.5
    flip_x_prob: float = 0.5  # x → -x ("vertical" in mmdet3d)
    flip_y_prob: float = 0.5  # y → -y ("horizontal")


def image_aug(src_hw: tuple[int, int], dst_hw: tuple[int, int], cfg: AugConfig, train: bool,
              rng: np.random.Generator) -> np.ndarray:
    """3×3 affine (pixels of the source image → pixels of the augmented image)."""
    H, W = src_hw
    fH, fW = dst_hw
    k = fW / _REF_WIDTH * (1600.0 / W)
    if train:
        resize = float(rng.uniform(*cfg.resize_lim)) * k
        new_w, new_h = int(W * resize), int(H * resize)
        crop_h = int((1 - rng.uniform(*cfg.bot_pct_lim)) * new_h) - fH
        crop_w = int(rng.uniform(0, max(0, new_w - fW)))
        flip = bool(cfg.image_flip and rng.random() < 0.5)
        rotate = float(rng.uniform(*cfg.rot_lim_deg))
    else:
        resize = cfg.resize_test * k
        new_w, new_h = int(W * resize), int(H * resize)
        crop_h = int((1 - np.mean(cfg.bot_pct_lim)) * new_h) - fH
        crop_w = int(max(0, new_w - fW) / 2)
        flip, rotate = False, 0.0
    m = np.array([[resize, 0, -crop_w], [0, resize, -crop_h], [0, 0, 1.0]])
    if flip:
        m = np.array([[-1.0, 0, fW], [0, 1, 0], [0, 0, 1]]) @ m
    if rotate:
        th = np.radians(rotate)
        c, s = np.cos(th), np.sin(th)
        centre = np.array([fW / 2, fH / 2])
        r = np.array([[c, s], [-s, c]])  # counter-clockwise on screen (v points down)
        rot = np.eye(3)
        rot[:2, :2] = r
        rot[:2, 2] = centre - r @ centre
        m = rot @ m
    return m


def to_4x4(affine: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:2, :2] = affine[:2, :2]
    out[:2, 3] = affine[:2, 2]
    return out


def global_aug(cfg: AugConfig, train: bool, rng: np.random.Generator) -> np.ndarray:
    """4×4 lidar_aug_matrix: flip ∘ (translate + scale · rotate)."""
    m = np.eye(4)
    if not train:
        return m
    th = float(rng.uniform(*cfg.global_rot))
    scale = float(rng.uniform(*cfg.global_scale))
    c, s = np.cos(th), np.sin(th)
    m[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    m[:3, 3] = rng.normal(0, cfg.global_translate_std, 3)
    flip = np.eye(4)
    if rng.random() < cfg.flip_y_prob:
        flip[1, 1] = -1
    if rng.random() < cfg.flip_x_prob:
        flip[0, 0] = -1
    return flip @ m


def apply_to_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    out = points.copy()
    out[:, :3] = points[:, :3] @ m[:3, :3].T.astype(points.dtype) + m[:3, 3].astype(points.dtype)
    return out


def apply_to_boxes(boxes: np.ndarray, velocity: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [M, 7] (x, y, z, l, w, h, yaw) and velocities [M, 2] under a rotate/scale/flip/translate matrix."""
    lin = m[:3, :3]
    scale = float(np.cbrt(abs(det3(lin))))
    out = boxes.copy()
    out[:, :3] = boxes[:, :3] @ lin.T + m[:3, 3]
    out[:, 3:6] = boxes[:, 3:6] * scale
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6])], 1) @ lin[:2, :2].T
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    vel = velocity @ lin[:2, :2].T
    return out, vel
