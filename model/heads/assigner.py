"""One-to-one assignment of TransFusion's proposals to ground-truth boxes (HungarianAssigner3D).

cost = FocalLossCost(class logits) + BBoxBEVL1Cost(normalised BEV centres) + IoU3DCost(-3D IoU), solved by
`scipy.optimize.linear_sum_assignment` on the CPU (the matrix is at most 200 x a few hundred).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .iou3d import box_iou_3d


class FocalLossCost:
    """Classification cost of assigning each prediction to each GT class (mmdet's FocalLossCost)."""

    def __init__(self, weight: float = 0.15, alpha: float = 0.25, gamma: float = 2.0, eps: float = 1e-12):
        self.weight, self.alpha, self.gamma, self.eps = weight, alpha, gamma, eps

    def __call__(self, cls_logits: Tensor, gt_labels: Tensor) -> Tensor:
        """cls_logits [P, C], gt_labels [M] -> [P, M]."""
        p = cls_logits.float().sigmoid()
        neg = -(1 - p + self.eps).log() * (1 - self.alpha) * p.pow(self.gamma)
        pos = -(p + self.eps).log() * self.alpha * (1 - p).pow(self.gamma)
        return (pos[:, gt_labels] - neg[:, gt_labels]) * self.weight


class BBoxBEVL1Cost:
    """L1 distance of BEV centres normalised by the point-cloud range."""

    def __init__(self, weight: float = 0.25):
        self.weight = weight

    def __call__(self, boxes: Tensor, gt_boxes: Tensor, point_cloud_range: Sequence[float]) -> Tensor:
        start = boxes.new_tensor(point_cloud_range[0:2])
        extent = boxes.new_tensor(point_cloud_range[3:5]) - start
        a = (boxes[:, :2] - start) / extent
        b = (gt_boxes[:, :2] - start) / extent
        return torch.cdist(a, b, p=1) * self.weight


class IoU3DCost:
    def __init__(self, weight: float = 0.25):
        self.weight = weight

    def __call__(self, iou: Tensor) -> Tensor:
        return -iou * self.weight


@dataclass
class AssignResult:
    """assigned_gt_inds: [P] 0 = background, i + 1 = GT i; max_overlaps: [P] IoU with the assigned GT (0 else)."""

    num_gts: int
    assigned_gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor


class HungarianAssigner3D:
    def __init__(self, cls_cost: FocalLossCost | None = None, reg_cost: BBoxBEVL1Cost | None = None,
                 iou_cost: IoU3DCost | None = None):
        self.cls_cost = cls_cost or FocalLossCost()
        self.reg_cost = reg_cost or BBoxBEVL1Cost()
        self.iou_cost = iou_cost or IoU3DCost()

    def assign(self, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, cls_logits: Tensor,
               point_cloud_range: Sequence[float]) -> AssignResult:
        """boxes [P, 7+] decoded predictions, gt_boxes [M, 7+], gt_labels [M], cls_logits [P, C]."""
        boxes, gt_boxes = boxes.detach().float(), gt_boxes.detach().float()
        num_props, num_gts = boxes.shape[0], gt_boxes.shape[0]
        assigned = torch.zeros(num_props, dtype=torch.long, device=boxes.device)
        labels = torch.full((num_props,), -1, dtype=torch.long, device=boxes.device)
        overlaps = boxes.new_zeros(num_props)
        if num_gts == 0 or num_props == 0:
            return AssignResult(num_gts, assigned, overlaps, labels)
        iou = torch.nan_to_num(box_iou_3d(boxes, gt_boxes), nan=0.0)  # inf-sized predictions early in training
        cost = (self.cls_cost(cls_logits.detach(), gt_labels) + self.reg_cost(boxes, gt_boxes, point_cloud_range)
                + self.iou_cost(iou))
        # A diverged step must not crash scipy ("cost matrix is infeasible"); it will show in the losses.
        cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6)
        rows, cols = linear_sum_assignment(cost.cpu().double().numpy())
        rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=boxes.device)
        cols_t = torch.as_tensor(np.asarray(cols), dtype=torch.long, device=boxes.device)
        assigned[rows_t] = cols_t + 1
        labels[rows_t] = gt_labels[cols_t].long()
        overlaps[rows_t] = iou[rows_t, cols_t]
        return AssignResult(num_gts, assigned, overlaps, labels)
