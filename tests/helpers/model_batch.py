"""A fixed, hand-built synthetic batch in the DEVELOPERS.md batch format, for model tests (no data pipeline)."""

from __future__ import annotations

import math

import torch


def _rig(num_cams: int, image_size):
    H, W = image_size
    K = torch.eye(4)
    K[0, 0] = K[1, 1] = W / 2.0  # ~90 degree horizontal field of view
    K[0, 2], K[1, 2] = W / 2.0, H / 2.0
    c2l = []
    for i in range(num_cams):
        a = 2 * math.pi * i / num_cams
        fwd = torch.tensor([math.cos(a), math.sin(a), 0.0])
        right = torch.tensor([math.sin(a), -math.cos(a), 0.0])
        down = torch.tensor([0.0, 0.0, -1.0])
        T = torch.eye(4)
        T[:3, :3] = torch.stack([right, down, fwd], dim=1)  # camera axes (x right, y down, z forward) in LiDAR
        T[:3, 3] = torch.tensor([0.5 * math.cos(a), 0.5 * math.sin(a), 1.6])
        c2l.append(T)
    c2l = torch.stack(c2l)
    return K.expand(num_cams, 4, 4).clone(), c2l


def make_batch(cfg, batch_size: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    N = cfg.num_cameras
    H, W = cfg.image_size
    K, c2l = _rig(N, cfg.image_size)
    l2c = torch.inverse(c2l)
    batch = {k: [] for k in ("img", "points", "gt_boxes", "gt_labels", "gt_masks_bev")}
    Xm, Ym = cfg.map_size
    (xmin, _, xres), (ymin, _, yres) = cfg.map_bound
    for b in range(batch_size):
        M = 4
        xy = (torch.rand(M, 2, generator=g) - 0.5) * 60
        lwh = torch.tensor([4.5, 2.0, 1.7]).expand(M, 3) * (0.8 + 0.4 * torch.rand(M, 1, generator=g))
        yaw = (torch.rand(M, 1, generator=g) - 0.5) * 2 * math.pi
        z = torch.full((M, 1), -1.0)
        vel = torch.randn(M, 2, generator=g)
        boxes = torch.cat([xy, z, lwh, yaw, vel], 1)
        labels = torch.randint(0, len(cfg.object_classes), (M,), generator=g)
        # LiDAR: a ground plane plus dense returns on every box, so the objects are learnable
        ground = torch.cat([(torch.rand(3000, 2, generator=g) - 0.5) * 100, torch.full((3000, 1), -1.8)], 1)
        obj = []
        for m in range(M):
            local = (torch.rand(300, 3, generator=g) - 0.5) * boxes[m, 3:6]
            c, s = math.cos(boxes[m, 6]), math.sin(boxes[m, 6])
            rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            obj.append(local @ rot.T + boxes[m, :3])
        xyz = torch.cat([ground] + obj)
        extra = torch.cat([torch.rand(len(xyz), 1, generator=g), torch.zeros(len(xyz), 1)], 1)
        batch["points"].append(torch.cat([xyz, extra], 1))
        batch["gt_boxes"].append(boxes)
        batch["gt_labels"].append(labels)
        masks = torch.zeros(len(cfg.map_classes), Xm, Ym)
        xs = xmin + (torch.arange(Xm) + 0.5) * xres
        ys = ymin + (torch.arange(Ym) + 0.5) * yres
        gx, gy = torch.meshgrid(xs, ys, indexing="ij")
        masks[0] = (gy.abs() < 8).float()  # a road along x
        masks[1] = ((gx - 10 * b).abs() < 3).float() * masks[0]
        masks[2] = ((gy.abs() >= 8) & (gy.abs() < 11)).float()
        masks[3] = ((gx - 20).abs() < 1).float() * masks[0]
        masks[4] = ((gx + 30).abs() < 8).float() * ((gy - 25).abs() < 8).float()
        masks[5] = (gy.abs() < 0.6).float()
        batch["gt_masks_bev"].append(masks)
        batch["img"].append(torch.randn(N, 3, H, W, generator=g))
    eye = torch.eye(4).expand(batch_size, 4, 4).clone()
    return {
        "img": torch.stack(batch["img"]),
        "points": batch["points"],
        "camera_intrinsics": K.expand(batch_size, N, 4, 4).clone(),
        "camera2lidar": c2l.expand(batch_size, N, 4, 4).clone(),
        "lidar2camera": l2c.expand(batch_size, N, 4, 4).clone(),
        "lidar2image": (K @ l2c).expand(batch_size, N, 4, 4).clone(),
        "camera2ego": c2l.expand(batch_size, N, 4, 4).clone(),
        "lidar2ego": eye.clone(),
        "img_aug_matrix": torch.eye(4).expand(batch_size, N, 4, 4).clone(),
        "lidar_aug_matrix": eye.clone(),
        "gt_boxes": batch["gt_boxes"],
        "gt_labels": batch["gt_labels"],
        "gt_masks_bev": torch.stack(batch["gt_masks_bev"]),
        "metas": [{"token": f"synthetic-{b}", "scene": "synthetic", "timestamp": 0, "lidar2ego": torch.eye(4).tolist(),
                   "ego2global": torch.eye(4).tolist()} for b in range(batch_size)],
    }
