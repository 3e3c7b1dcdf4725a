"""Camera-to-BEV view transforms (LSS): lift image features onto a depth frustum, splat them into BEV cells.

`DepthLSSTransform` (detection model) additionally projects the LiDAR points into every image as a one-channel
sparse depth map and feeds it through `dtransform` before predicting depth. `LSSTransform` (segmentation model)
predicts depth from image features alone. Geometry buffers `dx, bx, nx, frustum` are frozen parameters, as in the
original, so they appear in state dicts under the same names.
"""

from __future__ import annotations

import torch
from torch import nn

from model.ops.bev_pool import bev_pool, bev_pool_lift


def _grid(xbound, ybound, zbound):
    rows = (xbound, ybound, zbound)
    dx = torch.tensor([r[2] for r in rows], dtype=torch.float32)
    bx = torch.tensor([r[0] + r[2] / 2.0 for r in rows], dtype=torch.float32)
    nx = torch.tensor([int((r[1] - r[0]) / r[2]) for r in rows], dtype=torch.long)
    return dx, bx, nx


def _conv_bn_relu(cin, cout, k, stride=1, bias=True):
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(True)]


class BaseTransform(nn.Module):
    def __init__(self, in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                 downsample=1):
        super().__init__()
        self.image_size = tuple(image_size)
        self.feature_size = tuple(feature_size)
        self.dbound = tuple(dbound)
        dx, bx, nx = _grid(xbound, ybound, zbound)
        self.dx = nn.Parameter(dx, requires_grad=False)
        self.bx = nn.Parameter(bx, requires_grad=False)
        self.nx = nn.Parameter(nx, requires_grad=False)
        self.C = out_channels
        # "auto": the fused sparse-product pooling on CPU (measured there); on GPU the plain scatter (index_add_ with
        # atomics), until the sparse-CSR kernels are measured on one. True / False force either.
        self.fused_pool: bool | str = "auto"
        self.frustum = nn.Parameter(self._frustum(), requires_grad=False)
        self.D = self.frustum.shape[0]
        if downsample > 1:
            self.downsample = nn.Sequential(
                *_conv_bn_relu(out_channels, out_channels, 3, bias=False),
                *_conv_bn_relu(out_channels, out_channels, 3, stride=downsample, bias=False),
                *_conv_bn_relu(out_channels, out_channels, 3, bias=False),
            )
        else:
            self.downsample = nn.Identity()

    def _frustum(self):
        iH, iW = self.image_size
        fH, fW = self.feature_size
        ds = torch.arange(*self.dbound, dtype=torch.float32).view(-1, 1, 1).expand(-1, fH, fW)
        D = ds.shape[0]
        xs = torch.linspace(0, iW - 1, fW, dtype=torch.float32).view(1, 1, fW).expand(D, fH, fW)
        ys = torch.linspace(0, iH - 1, fH, dtype=torch.float32).view(1, fH, 1).expand(D, fH, fW)
        return torch.stack((xs, ys, ds), -1)  # D, fH, fW, 3 (pixel u, pixel v, depth)

    def get_geometry(self, camera2lidar, intrinsics, img_aug_matrix, lidar_aug_matrix):
        """LiDAR-frame xyz of every frustum point: undo image augmentation, unproject, move to LiDAR, apply the
        LiDAR augmentation. -> [B, N, D, fH, fW, 3]"""
        B, N = camera2lidar.shape[:2]
        post_rots, post_trans = img_aug_matrix[..., :3, :3], img_aug_matrix[..., :3, 3]
        pts = self.frustum - post_trans.view(B, N, 1, 1, 1, 3)
        pts = torch.inverse(post_rots).view(B, N, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1))
        pts = torch.cat((pts[..., :2, :] * pts[..., 2:3, :], pts[..., 2:3, :]), -2)
        combine = camera2lidar[..., :3, :3].matmul(torch.inverse(intrinsics[..., :3, :3]))
        pts = combine.view(B, N, 1, 1, 1, 3, 3).matmul(pts).squeeze(-1)
        pts = pts + camera2lidar[..., :3, 3].view(B, N, 1, 1, 1, 3)
        rot, trans = lidar_aug_matrix[..., :3, :3], lidar_aug_matrix[..., :3, 3]
        pts = rot.view(B, 1, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1)).squeeze(-1)
        return pts + trans.view(B, 1, 1, 1, 1, 3)

    def bev_pool(self, geom, x):
        """Pool materialised frustum features x [B, N, D, fH, fW, C] (the original's interface)."""
        return bev_pool(x, geom, self.bx, self.dx, self.nx)

    def depth_and_context(self, img, depth_map):
        """-> depth probabilities [B, N, D, fH, fW], context [B, N, C, fH, fW]."""
        raise NotImplementedError

    def get_cam_feats(self, img, depth_map=None):
        """The original's frustum features depth x context, [B, N, D, fH, fW, C] (for inspection and tests; the
        forward pass pools without building them)."""
        depth, context = self.depth_and_context(img, depth_map)
        return (depth.unsqueeze(2) * context.unsqueeze(3)).permute(0, 1, 3, 4, 5, 2)

    def forward(self, img, points, camera_intrinsics, camera2lidar, lidar2image, img_aug_matrix, lidar_aug_matrix,
                **_):
        geom = self.get_geometry(camera2lidar, camera_intrinsics, img_aug_matrix, lidar_aug_matrix)
        depth_map = self.depth_map(points, lidar2image, img_aug_matrix, lidar_aug_matrix, img.shape[1])
        depth, context = self.depth_and_context(img, depth_map)
        if self.fused_pool is True or (self.fused_pool == "auto" and not depth.is_cuda):
            # fused lift + splat: same result as bev_pool(get_cam_feats(...)) without the [B,N,D,fH,fW,C] tensor
            x = bev_pool_lift(depth, context, geom, self.bx, self.dx, self.nx)
        else:
            x = bev_pool((depth.unsqueeze(2) * context.unsqueeze(3)).permute(0, 1, 3, 4, 5, 2), geom, self.bx,
                         self.dx, self.nx)
        return self.downsample(x)

    def depth_map(self, points, lidar2image, img_aug_matrix, lidar_aug_matrix, num_cams):
        return None


class LSSTransform(BaseTransform):
    """Depth from image features only (segmentation model): `depthnet` is one 1x1 conv."""

    def __init__(self, in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                 downsample=1):
        super().__init__(in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                         downsample)
        self.depthnet = nn.Conv2d(in_channels, self.D + self.C, 1)

    def depth_and_context(self, img, depth_map=None):
        B, N, C, fH, fW = img.shape
        return _split(self.depthnet(img.view(B * N, C, fH, fW)), self.D, self.C, B, N)


class DepthLSSTransform(BaseTransform):
    """Depth from image features plus a LiDAR depth image (detection model)."""

    def __init__(self, in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                 downsample=1):
        super().__init__(in_channels, out_channels, image_size, feature_size, xbound, ybound, zbound, dbound,
                         downsample)
        # the depth image is 8x the feature stride: two strided convs (4, then 2) bring it to feature resolution
        self.dtransform = nn.Sequential(*_conv_bn_relu(1, 8, 1), *_conv_bn_relu(8, 32, 5, stride=4),
                                        *_conv_bn_relu(32, 64, 5, stride=2))
        self.depthnet = nn.Sequential(*_conv_bn_relu(in_channels + 64, in_channels, 3),
                                      *_conv_bn_relu(in_channels, in_channels, 3),
                                      nn.Conv2d(in_channels, self.D + self.C, 1))

    def depth_map(self, points, lidar2image, img_aug_matrix, lidar_aug_matrix, num_cams):
        """One-channel image of LiDAR depths, [B, N, 1, H, W], 0 where no point projects.

        Points are taken back to the un-augmented LiDAR frame (the calibration refers to it), projected, then moved
        by the image augmentation. Where several points hit one pixel we keep the nearest (the original keeps an
        arbitrary one: the last CUDA write), which is what the camera would see.
        """
        H, W = self.image_size
        B = len(points)
        device = points[0].device
        depth = torch.zeros(B, num_cams, H * W, device=device)
        for b in range(B):
            xyz = points[b][:, :3]
            xyz = (xyz - lidar_aug_matrix[b, :3, 3]) @ torch.inverse(lidar_aug_matrix[b, :3, :3]).T
            cam = lidar2image[b, :, :3, :3].matmul(xyz.T) + lidar2image[b, :, :3, 3:4]  # N, 3, P
            dist = cam[:, 2].clamp(1e-5, 1e5)
            uv = cam[:, :2] / dist.unsqueeze(1)
            uv = img_aug_matrix[b, :, :2, :2].matmul(uv) + img_aug_matrix[b, :, :2, 3:4]
            # image augmentation is planar (resize/crop/flip/rotate): only its 2x2 block and translation act on uv
            u, v = uv[:, 0], uv[:, 1]
            on = (v >= 0) & (v < H) & (u >= 0) & (u < W)
            cam_idx, pt_idx = on.nonzero(as_tuple=True)
            pix = v[cam_idx, pt_idx].long() * W + u[cam_idx, pt_idx].long()
            flat = depth[b].view(-1)
            target = cam_idx * (H * W) + pix
            vals = dist[cam_idx, pt_idx]
            big = torch.full_like(flat, float("inf"))
            big.scatter_reduce_(0, target, vals, reduce="amin")
            flat.copy_(torch.where(torch.isinf(big), flat, big))
        return depth.view(B, num_cams, 1, H, W)

    def depth_and_context(self, img, depth_map):
        B, N, C, fH, fW = img.shape
        d = self.dtransform(depth_map.view(B * N, *depth_map.shape[2:]))
        x = self.depthnet(torch.cat([d, img.view(B * N, C, fH, fW)], dim=1))
        return _split(x, self.D, self.C, B, N)


def _split(x, D, C, B, N):
    """depthnet output -> depth distribution (softmax over D bins) [B, N, D, fH, fW], context [B, N, C, fH, fW]."""
    fH, fW = x.shape[-2:]
    return x[:, :D].softmax(dim=1).view(B, N, D, fH, fW), x[:, D:D + C].view(B, N, C, fH, fW)
