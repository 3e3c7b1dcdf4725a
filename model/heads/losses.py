"""Losses and target helpers of the BEVFusion heads (semantics of the mmdet 2.x / mmdet3d 0.x versions the
original config names). Every function upcasts to float32 first: the heads may run under fp16/bf16 autocast, and
focal terms (`log`, `pow`) underflow or overflow in half precision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _f32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def clip_sigmoid(x: Tensor, eps: float = 1e-4) -> Tensor:
    """Sigmoid clamped to [eps, 1 - eps] so GaussianFocalLoss's logs stay finite."""
    return _f32(x).sigmoid().clamp(min=eps, max=1 - eps)


def gaussian_focal_loss(pred: Tensor, target: Tensor, avg_factor: float, alpha: float = 2.0,
                        gamma: float = 4.0, weight: float = 1.0) -> Tensor:
    """CenterNet-style focal loss on a Gaussian heatmap (mmdet `GaussianFocalLoss`, reduction mean).

    pred: probabilities (already sigmoid-ed); target: Gaussian heatmap with 1 at object centres.
    Summed and divided by `avg_factor` (the number of centre pixels), like the original.
    """
    eps = 1e-12
    pred, target = _f32(pred), _f32(target)
    pos = target.eq(1).float()
    neg_w = (1 - target).pow(gamma)
    pos_loss = -(pred + eps).log() * (1 - pred).pow(alpha) * pos
    neg_loss = -(1 - pred + eps).log() * pred.pow(alpha) * neg_w
    return weight * (pos_loss + neg_loss).sum() / avg_factor


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, label_weights: Tensor, avg_factor: float,
                       gamma: float = 2.0, alpha: float = 0.25, weight: float = 1.0) -> Tensor:
    """mmdet `FocalLoss(use_sigmoid=True)` for classification: logits [N, C], labels [N] in [0, C] where C
    means background (all-zero one-hot), label_weights [N]; summed and divided by `avg_factor`."""
    logits = _f32(logits)
    num_classes = logits.shape[-1]
    target = F.one_hot(labels.long(), num_classes + 1)[:, :num_classes].to(logits.dtype)
    p = logits.sigmoid()
    pt = (1 - p) * target + p * (1 - target)
    focal_w = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal_w
    loss = loss * _f32(label_weights)[:, None]
    return weight * loss.sum() / avg_factor


def weighted_l1_loss(pred: Tensor, target: Tensor, weights: Tensor, avg_factor: float,
                     weight: float = 1.0) -> Tensor:
    """mmdet `L1Loss` with element weights, summed and divided by `avg_factor`."""
    pred, target, weights = _f32(pred), _f32(target), _f32(weights)
    if target.numel() == 0:
        return pred.sum() * 0
    return weight * ((pred - target).abs() * weights).sum() / avg_factor


def binary_focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = -1.0) -> Tensor:
    """Per-pixel sigmoid focal loss, mean-reduced (the BEV map head's `focal`; alpha < 0 means no alpha)."""
    logits, target = _f32(logits), _f32(target)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.mean()


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice of sigmoid(logits) against a 0/1 mask, over the whole batch.

    Pooling over the batch (not per sample) keeps the loss defined for samples where a class is absent; the
    `smooth` term makes an empty prediction of an empty mask score 0 instead of 0/0.
    """
    p = _f32(logits).sigmoid().flatten()
    t = _f32(target).flatten()
    inter = (p * t).sum()
    return 1 - (2 * inter + smooth) / (p.sum() + t.sum() + smooth)


def gaussian_radius(height: float, width: float, min_overlap: float = 0.5) -> float:
    """CenterNet's radius: the smallest of the three corner-shift cases keeping IoU >= min_overlap.

    Kept with CenterNet's (well-known, slightly conservative) quadratic solutions because the original's targets
    are defined by them.
    """
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 * b1 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 * b2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: Tensor, ix: int, iy: int, radius: int) -> None:
    """Max-splat a Gaussian (sigma = diameter / 6) centred on cell (ix, iy) into `heatmap` [X, Y] in place."""
    size_x, size_y = heatmap.shape
    if not (0 <= ix < size_x and 0 <= iy < size_y):
        return
    sigma = (2 * radius + 1) / 6
    offs = torch.arange(-radius, radius + 1, dtype=heatmap.dtype, device=heatmap.device)
    g = torch.exp(-(offs[:, None] ** 2 + offs[None] ** 2) / (2 * sigma * sigma))
    g = torch.where(g < torch.finfo(g.dtype).eps * g.max(), torch.zeros_like(g), g)
    x0, x1 = max(ix - radius, 0), min(ix + radius + 1, size_x)
    y0, y1 = max(iy - radius, 0), min(iy + radius + 1, size_y)
    patch = g[x0 - ix + radius:x1 - ix + radius, y0 - iy + radius:y1 - iy + radius]
    region = heatmap[x0:x1, y0:y1]
    region.copy_(torch.maximum(region, patch))
