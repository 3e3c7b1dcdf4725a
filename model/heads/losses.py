"""Losses and target helpers of the BEVFusion heads (semantics of the mmdet 2.x / mmdet3d 0.x versions the
original config names). Every function upcasts to float32 first: the heads may run under fp16/bf16 autocast, and
focal terms (`log`, `pow`) underflow or overflow in half precision.
"""

from __future__ import annotations

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


def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.5) -> Tensor:
    """CenterNet's radius (elementwise): the smallest of the three corner-shift cases keeping IoU >= min_overlap.

    Kept with CenterNet's (well-known, slightly conservative) quadratic solutions because the original's targets
    are defined by them.
    """
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 * b1 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2 * b2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3 * b3 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def gaussian_heatmap(shape: tuple[int, int, int], labels: Tensor, cx: Tensor, cy: Tensor, radius: Tensor) -> Tensor:
    """Class heatmap [C, X, Y] with a Gaussian (sigma = diameter / 6, peak 1) max-splatted per object.

    labels, cx, cy (centre cell), radius: integer [M]. All objects are drawn at once (padded to the largest
    radius, scatter with `amax`), so a GPU step does not launch a few kernels per box.
    """
    num_classes, size_x, size_y = shape
    heatmap = torch.zeros(num_classes * size_x * size_y, dtype=torch.float32, device=labels.device)
    if labels.numel() == 0:
        return heatmap.view(shape)
    r_max = int(radius.max())
    offs = torch.arange(-r_max, r_max + 1, device=labels.device)
    dx, dy = offs[None, :, None], offs[None, None, :]
    r = radius.view(-1, 1, 1)
    sigma = (2 * r + 1).float() / 6
    g = torch.exp(-(dx * dx + dy * dy).float() / (2 * sigma * sigma))
    px, py = cx.view(-1, 1, 1) + dx, cy.view(-1, 1, 1) + dy
    # A centre cell outside the map still draws the part of its Gaussian that falls inside, as the original's
    # clipped window does; only the cells themselves are bounds-checked.
    keep = ((dx.abs() <= r) & (dy.abs() <= r) & (g >= torch.finfo(torch.float32).eps)
            & (px >= 0) & (px < size_x) & (py >= 0) & (py < size_y))
    index = (labels.view(-1, 1, 1) * size_x + px) * size_y + py
    heatmap.scatter_reduce_(0, index[keep], g[keep], reduce="amax")
    return heatmap.view(shape)
