"""TransFusion's box coding: what the prediction heads regress and how it maps back to metric boxes.

Code (code_size 10): centre x, y in BEV feature cells (offset added to the query's cell centre by the head),
z, log(l, w, h), sin(yaw), cos(yaw), vx, vy.

Boxes here have z at the box centre (the batch layout), so the original's bottom <-> gravity centre shift in
encode/decode cancels out and is dropped: the regressed `height` is the centre z either way.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


class TransFusionBBoxCoder:
    def __init__(self, pc_range: Sequence[float], out_size_factor: int, voxel_size: Sequence[float],
                 post_center_range: Sequence[float] | None = None, score_threshold: float | None = None,
                 code_size: int = 10):
        self.pc_range = [float(v) for v in pc_range[:2]]
        self.out_size_factor = out_size_factor
        self.voxel_size = [float(v) for v in voxel_size[:2]]
        self.post_center_range = None if post_center_range is None else [float(v) for v in post_center_range]
        self.score_threshold = score_threshold
        self.code_size = code_size

    def encode(self, boxes: Tensor) -> Tensor:
        """[M, 7 or 9] metric boxes -> [M, code_size] regression targets (float32)."""
        b = boxes.float()
        t = b.new_zeros((b.shape[0], self.code_size))
        t[:, 0] = (b[:, 0] - self.pc_range[0]) / (self.out_size_factor * self.voxel_size[0])
        t[:, 1] = (b[:, 1] - self.pc_range[1]) / (self.out_size_factor * self.voxel_size[1])
        t[:, 2] = b[:, 2]
        t[:, 3:6] = b[:, 3:6].log()
        t[:, 6] = torch.sin(b[:, 6])
        t[:, 7] = torch.cos(b[:, 6])
        if self.code_size == 10:
            t[:, 8:10] = b[:, 7:9]
        return t

    def decode(self, heatmap: Tensor, rot: Tensor, dim: Tensor, center: Tensor, height: Tensor,
               vel: Tensor | None, filter: bool = False) -> list[dict[str, Tensor]]:
        """Head outputs [B, C, P] -> per sample {'bboxes': [K, 9], 'scores': [K], 'labels': [K]} (float32).

        With `filter`, keeps boxes scoring above `score_threshold` whose centre lies in `post_center_range`.
        """
        heatmap, rot, dim, center, height = (t.float() for t in (heatmap, rot, dim, center, height))
        scores, labels = heatmap.max(dim=1)
        cx = center[:, 0] * self.out_size_factor * self.voxel_size[0] + self.pc_range[0]
        cy = center[:, 1] * self.out_size_factor * self.voxel_size[1] + self.pc_range[1]
        parts = [cx[:, None], cy[:, None], height, dim.exp(), torch.atan2(rot[:, 0:1], rot[:, 1:2])]
        if vel is not None:
            parts.append(vel.float())
        boxes = torch.cat(parts, dim=1).permute(0, 2, 1)  # [B, P, code]
        out = []
        for i in range(boxes.shape[0]):
            keep = torch.ones_like(scores[i], dtype=torch.bool)
            if filter and self.score_threshold is not None:
                keep &= scores[i] > self.score_threshold
            if filter and self.post_center_range is not None:
                r = boxes.new_tensor(self.post_center_range)
                keep &= (boxes[i, :, :3] >= r[:3]).all(-1) & (boxes[i, :, :3] <= r[3:]).all(-1)
            out.append({"bboxes": boxes[i][keep], "scores": scores[i][keep], "labels": labels[i][keep]})
        return out
