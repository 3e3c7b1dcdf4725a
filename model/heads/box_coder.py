"""TransFusion's box coding: what the prediction heads regress and how it maps back to metric boxes.

Boxes outside the head are always the batch layout: x, y, z (box centre), l (along heading), w, h, yaw, vx, vy.
What the head regresses (code_size 10) depends on the box convention its weights were trained in:

- `mmdet3d` (mmdet3d 1.x projects/BEVFusion): x, y in BEV feature cells (offset added to the query's cell
  centre by the head), z, log(l, w, h), sin(yaw), cos(yaw), vx, vy. mmdet3d 1.x stores boxes with z at the
  bottom and its coder adds h/2 back (`bottom center to gravity center`), so the regressed z is the centre.
- `mit-han-lab` (the original): its converter stores (w, l, h, -yaw - pi/2) with the devkit's centre z, and its
  dataset reads that z as the box bottom (`origin=(0.5, 0.5, 0)`); its coder then adds h/2. So the head
  regresses z_centre + h/2, log(w, l, h) and sin/cos(-yaw - pi/2); decoding subtracts h/2 again.

The size order and the heading are a linear change of the regression outputs, but z is not (it needs exp of the
regressed height), so a loaded head keeps its own convention and the coder follows it (model/checkpoint.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

CONVENTIONS = ("mmdet3d", "mit-han-lab")


class TransFusionBBoxCoder:
    def __init__(self, pc_range: Sequence[float], out_size_factor: int, voxel_size: Sequence[float],
                 post_center_range: Sequence[float] | None = None, score_threshold: float | None = None,
                 code_size: int = 10, convention: str = "mmdet3d"):
        self.pc_range = [float(v) for v in pc_range[:2]]
        self.out_size_factor = out_size_factor
        self.voxel_size = [float(v) for v in voxel_size[:2]]
        self.post_center_range = None if post_center_range is None else [float(v) for v in post_center_range]
        self.score_threshold = score_threshold
        self.code_size = code_size
        self.convention = convention

    @property
    def convention(self) -> str:
        return self._convention

    @convention.setter
    def convention(self, value: str) -> None:
        if value not in CONVENTIONS:
            raise ValueError(f"box convention must be one of {CONVENTIONS}, got {value!r}")
        self._convention = value

    def encode(self, boxes: Tensor) -> Tensor:
        """[M, 7 or 9] metric boxes -> [M, code_size] regression targets (float32)."""
        b = boxes.float()
        t = b.new_zeros((b.shape[0], self.code_size))
        t[:, 0] = (b[:, 0] - self.pc_range[0]) / (self.out_size_factor * self.voxel_size[0])
        t[:, 1] = (b[:, 1] - self.pc_range[1]) / (self.out_size_factor * self.voxel_size[1])
        if self.convention == "mit-han-lab":
            t[:, 2] = b[:, 2] + b[:, 5] * 0.5
            t[:, 3:6] = b[:, [4, 3, 5]].log()
            yaw = -b[:, 6] - math.pi / 2
        else:
            t[:, 2] = b[:, 2]
            t[:, 3:6] = b[:, 3:6].log()
            yaw = b[:, 6]
        t[:, 6] = torch.sin(yaw)
        t[:, 7] = torch.cos(yaw)
        if self.code_size == 10:
            t[:, 8:10] = b[:, 7:9]
        return t

    def decode(self, heatmap: Tensor, rot: Tensor, dim: Tensor, center: Tensor, height: Tensor,
               vel: Tensor | None, filter: bool = False) -> list[dict[str, Tensor]]:
        """Head outputs [B, C, P] -> per sample {'bboxes': [K, 9], 'scores': [K], 'labels': [K]} (float32).

        With `filter`, keeps boxes scoring above `score_threshold` whose centre lies in `post_center_range`, with the
        reference coders' two edges: a threshold of 0 (the nuScenes configs') filters nothing, and the range's z
        bounds test the z those coders decode (regressed height - h/2: the box bottom for mmdet3d, our z for the
        original's convention).
        """
        heatmap, rot, dim, center, height = (t.float() for t in (heatmap, rot, dim, center, height))
        scores, labels = heatmap.max(dim=1)
        cx = center[:, 0] * self.out_size_factor * self.voxel_size[0] + self.pc_range[0]
        cy = center[:, 1] * self.out_size_factor * self.voxel_size[1] + self.pc_range[1]
        size = dim.exp()
        if self.convention == "mit-han-lab":
            z = height - size[:, 2:3] * 0.5
            size = size[:, [1, 0, 2]]
            # yaw = -atan2(s, c) - pi/2, kept in (-pi, pi]: sin(yaw) = -c, cos(yaw) = -s
            yaw = torch.atan2(-rot[:, 1:2], -rot[:, 0:1])
        else:
            z = height
            yaw = torch.atan2(rot[:, 0:1], rot[:, 1:2])
        parts = [cx[:, None], cy[:, None], z, size, yaw]
        if vel is not None:
            parts.append(vel.float())
        boxes = torch.cat(parts, dim=1).permute(0, 2, 1)  # [B, P, code]
        ranged = boxes[..., :3].clone()
        if self.convention == "mmdet3d":
            ranged[..., 2] -= boxes[..., 5] * 0.5
        out = []
        for i in range(boxes.shape[0]):
            keep = torch.ones_like(scores[i], dtype=torch.bool)
            # `if self.score_threshold:` in both reference coders: 0.0 keeps the zero-score queries too
            if filter and self.score_threshold:
                keep &= scores[i] > self.score_threshold
            if filter and self.post_center_range is not None:
                r = boxes.new_tensor(self.post_center_range)
                keep &= (ranged[i] >= r[:3]).all(-1) & (ranged[i] <= r[3:]).all(-1)
            out.append({"bboxes": boxes[i][keep], "scores": scores[i][keep], "labels": labels[i][keep]})
        return out
