"""DepthLSSTransform / LSSTransform (model/camera/vtransform.py) against the original camera-to-BEV transform.

Reference, written here from the original's formulas (mit-han-lab/bevfusion at the release the published
checkpoints come from, `f39a4a0`; later commits added radar options whose defaults the LiDAR model does not use):
- `mmdet3d/models/vtransforms/base.py`: `gen_dx_bx` (dx = step, bx = lo + step / 2, nx = LongTensor((hi - lo) / step),
  i.e. truncated), `create_frustum` (depth bins `arange(*dbound)`, pixel u/v `linspace(0, iW - 1, fW)` /
  `linspace(0, iH - 1, fH)`), `get_geometry` (undo the image augmentation with the full 3x3 inverse, scale u, v by the
  depth, `camera2lidar_rot @ inverse(intrinsics)`, + translation, then the LiDAR augmentation), `bev_pool`
  (cell = `((geom - (bx - dx / 2)) / dx).long()`, keep 0 <= cell < nx, sum per cell, `cat(x.unbind(dim=2), 1)`),
  `BaseDepthTransform.forward` (points back through the inverse LiDAR augmentation, `lidar2image`, depth clamped to
  [1e-5, 1e5] and that clamped depth is the value written, u, v divided by it, image augmentation, kept where
  0 <= v < H and 0 <= u < W, written at pixel [long(v), long(u)]).
- `depth_lss.py` / `lss.py`: `dtransform` (1->8 1x1, 8->32 5x5 stride 4, 32->64 5x5 stride 2, each Conv-BN-ReLU with
  conv bias), `depthnet` (3x3, 3x3 Conv-BN-ReLU, 1x1 to D + C; a single 1x1 conv in LSSTransform), softmax over the D
  depth bins, outer product depth x context laid out [B, N, D, fH, fW, C], `downsample` (three bias-free 3x3
  Conv-BN-ReLU, the middle one strided).

Deliberate difference (documented in `DepthLSSTransform.depth_map`): where several LiDAR points project to one pixel
the original keeps whichever write lands last; ours keeps the nearest. The reference writes far-to-near so the
nearest wins, and the scene has such a collision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.camera.vtransform import DepthLSSTransform, LSSTransform
from tests.helpers.equivalence import TOL, one_thread, randomize  # noqa: F401  (one_thread: fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE, FEAT = (32, 48), (4, 6)
XB, YB, ZB, DB = (-8.0, 8.0, 0.5), (-8.0, 8.0, 0.5), (-10.0, 10.0, 20.0), (1.0, 13.0, 1.0)
B, N, CIN, COUT = 2, 2, 16, 8


def _rot_z(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _scene(seed: int = 0):
    """Two cameras (looking along +x and +y, slightly tilted), planar image augmentations as ImageAug3D builds them
    (resize/rotate 2x2 block + translation), a LiDAR augmentation (yaw, scale, translation), and points in the
    augmented LiDAR frame: most in view, some behind, one pixel hit twice at different depths."""
    g = torch.Generator().manual_seed(seed)
    H, W = IMAGE
    K = torch.eye(4, dtype=torch.float64)
    K[0, 0], K[1, 1], K[0, 2], K[1, 2] = 0.5 * W, 0.55 * W, 0.5 * W + 0.7, 0.5 * H - 0.4
    c2l = torch.zeros(B, N, 4, 4, dtype=torch.float64)
    img_aug = torch.zeros(B, N, 4, 4, dtype=torch.float64)
    laug = torch.zeros(B, 4, 4, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            yaw = n * math.pi / 2 + 0.1 * b
            fwd = torch.tensor([math.cos(yaw), math.sin(yaw), -0.05], dtype=torch.float64)
            fwd = fwd / fwd.norm()
            right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0], dtype=torch.float64)
            down = torch.linalg.cross(fwd, right)
            c2l[b, n, :3, :3] = torch.stack([right, down, fwd], dim=1)
            c2l[b, n, :3, 3] = torch.tensor([0.3 * n, -0.2, 1.5 + 0.1 * b], dtype=torch.float64)
            c2l[b, n, 3, 3] = 1
            a, s = 0.05 * (n - b + 0.5), 0.9 + 0.05 * n
            img_aug[b, n] = torch.eye(4, dtype=torch.float64)
            img_aug[b, n, :2, :2] = s * _rot_z(a)[:2, :2]
            img_aug[b, n, :2, 3] = torch.tensor([-2.0 + n, 1.5 - b], dtype=torch.float64)
        laug[b] = torch.eye(4, dtype=torch.float64)
        laug[b, :3, :3] = _rot_z(0.3 - 0.5 * b) * (1.0 + 0.03 * b)
        laug[b, :3, 3] = torch.tensor([0.4, -0.3 * b, 0.1], dtype=torch.float64)
    intrinsics = K.expand(B, N, 4, 4).clone()
    lidar2image = intrinsics @ torch.inverse(c2l)
    points = []
    for b in range(B):
        raw = (torch.rand(400, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([24.0, 24.0, 3.0],
                                                                                           dtype=torch.float64)
        ray = torch.tensor([[6.0, 0.3, 0.2]], dtype=torch.float64) - c2l[b, 0, :3, 3]
        near, far = c2l[b, 0, :3, 3] + ray, c2l[b, 0, :3, 3] + 1.6 * ray  # same pixel of camera 0, two depths
        raw = torch.cat([raw, far, near])
        aug = raw @ laug[b, :3, :3].T + laug[b, :3, 3]
        extra = torch.rand(len(aug), 2, generator=g, dtype=torch.float64)
        points.append(torch.cat([aug, extra], 1).float())
    f32 = lambda t: t.float()  # noqa: E731
    return dict(points=points, camera_intrinsics=f32(intrinsics), camera2lidar=f32(c2l),
                lidar2image=f32(lidar2image), img_aug_matrix=f32(img_aug), lidar_aug_matrix=f32(laug))


# ------------------------------------------------------------------------------------------- reference pieces


def _ref_frustum():
    ds = np.arange(*DB, dtype=np.float64)
    xs = np.linspace(0, IMAGE[1] - 1, FEAT[1])
    ys = np.linspace(0, IMAGE[0] - 1, FEAT[0])
    D = len(ds)
    fr = np.zeros((D, FEAT[0], FEAT[1], 3))
    fr[..., 0] = xs[None, None, :]
    fr[..., 1] = ys[None, :, None]
    fr[..., 2] = ds[:, None, None]
    return torch.from_numpy(fr)


def _ref_geometry(frustum, c2l, intrinsics, img_aug, laug):
    c2l, intrinsics, img_aug, laug = (t.double() for t in (c2l, intrinsics, img_aug, laug))
    out = torch.zeros(B, N, *frustum.shape, dtype=torch.float64)
    flat = frustum.double().reshape(-1, 3)
    for b in range(B):
        for n in range(N):
            p = (flat - img_aug[b, n, :3, 3]) @ torch.inverse(img_aug[b, n, :3, :3]).T
            p = torch.cat([p[:, :2] * p[:, 2:3], p[:, 2:3]], 1)
            p = p @ (c2l[b, n, :3, :3] @ torch.inverse(intrinsics[b, n, :3, :3])).T + c2l[b, n, :3, 3]
            p = p @ laug[b, :3, :3].T + laug[b, :3, 3]
            out[b, n] = p.reshape(frustum.shape)
    return out


def _ref_depth_map(points, lidar2image, img_aug, laug):
    H, W = IMAGE
    depth = torch.zeros(B, N, 1, H, W, dtype=torch.float64)
    hits = 0
    for b in range(B):
        xyz = points[b][:, :3].double()
        xyz = torch.inverse(laug[b, :3, :3].double()) @ (xyz - laug[b, :3, 3].double()).T
        for n in range(N):
            cam = lidar2image[b, n, :3, :3].double() @ xyz + lidar2image[b, n, :3, 3:4].double()
            z = cam[2].clamp(1e-5, 1e5)
            uvz = torch.stack([cam[0] / z, cam[1] / z, z])
            uvz = img_aug[b, n, :3, :3].double() @ uvz + img_aug[b, n, :3, 3:4].double()
            u, v = uvz[0], uvz[1]
            on = ((v < H) & (v >= 0) & (u < W) & (u >= 0)).nonzero()[:, 0]
            hits += len(on)
            for i in on[torch.argsort(z[on], descending=True)].tolist():  # far to near: the nearest is kept
                depth[b, n, 0, int(v[i]), int(u[i])] = z[i]
    return depth, hits


def _cbr(x, sd, conv, bn, stride=1, padding=None, bias=True):
    w = sd[f"{conv}.weight"]
    x = F.conv2d(x, w, sd[f"{conv}.bias"] if bias else None, stride=stride,
                 padding=w.shape[-1] // 2 if padding is None else padding)
    x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"],
                     training=False, eps=1e-5)
    return F.relu(x)


def _ref_cam_feats(sd, img, depth, D, C):
    """get_cam_feats of depth_lss.py (depth given) or lss.py (depth None) -> [B, N, D, fH, fW, C]."""
    b, n, cin, fH, fW = img.shape
    x = img.reshape(b * n, cin, fH, fW)
    if depth is not None:
        d = depth.reshape(b * n, *depth.shape[2:])
        d = _cbr(d, sd, "dtransform.0", "dtransform.1")
        d = _cbr(d, sd, "dtransform.3", "dtransform.4", stride=4)
        d = _cbr(d, sd, "dtransform.6", "dtransform.7", stride=2)
        x = torch.cat([d, x], dim=1)
        x = _cbr(x, sd, "depthnet.0", "depthnet.1")
        x = _cbr(x, sd, "depthnet.3", "depthnet.4")
        x = F.conv2d(x, sd["depthnet.6.weight"], sd["depthnet.6.bias"])
    else:
        x = F.conv2d(x, sd["depthnet.weight"], sd["depthnet.bias"])
    prob = x[:, :D].softmax(dim=1)
    x = prob.unsqueeze(1) * x[:, D:D + C].unsqueeze(2)  # BN, C, D, fH, fW
    return x.view(b, n, C, D, fH, fW).permute(0, 1, 3, 4, 5, 2)


def _ref_bev_pool(geom, feats, bx, dx, nx):
    """Quantise as the original (float32 `.long()`: truncation toward zero), drop outside cells, sum per cell."""
    Bn, C = feats.shape[0], feats.shape[-1]
    X, Y, Z = nx.tolist()
    cells = ((geom.float() - (bx - dx / 2.0)) / dx).long().reshape(Bn, -1, 3)
    f = feats.reshape(Bn, -1, C).double()
    out = torch.zeros(Bn, Z, X, Y, C, dtype=torch.float64)
    for b in range(Bn):
        c = cells[b]
        keep = (c[:, 0] >= 0) & (c[:, 0] < X) & (c[:, 1] >= 0) & (c[:, 1] < Y) & (c[:, 2] >= 0) & (c[:, 2] < Z)
        c, fb = c[keep], f[b][keep]
        out[b].index_put_((c[:, 2], c[:, 0], c[:, 1]), fb, accumulate=True)
    return torch.cat(out.permute(0, 4, 1, 2, 3).unbind(dim=2), 1)  # [B, C, Z, X, Y] -> Z folded into channels


def _ref_downsample(sd, x):
    x = _cbr(x, sd, "downsample.0", "downsample.1", bias=False)
    x = _cbr(x, sd, "downsample.3", "downsample.4", stride=2, padding=1, bias=False)
    return _cbr(x, sd, "downsample.6", "downsample.7", bias=False)


def _make(cls=DepthLSSTransform, **kw):
    torch.manual_seed(0)
    args = dict(in_channels=CIN, out_channels=COUT, image_size=IMAGE, feature_size=FEAT, xbound=XB, ybound=YB,
                zbound=ZB, dbound=DB, downsample=2)
    return randomize(cls(**{**args, **kw}), scale=0.15, bias_scale=0.3, skip=("dx", "bx", "frustum")).eval()


# ------------------------------------------------------------------------------------------- tests


def test_state_dict_keys_and_shapes_match_original():
    with torch.device("meta"):
        vt = DepthLSSTransform(256, 80, (256, 704), (32, 88), (-54.0, 54.0, 0.3), (-54.0, 54.0, 0.3),
                               (-10.0, 10.0, 20.0), (1.0, 60.0, 0.5), downsample=2)
    D, C = 118, 80
    expected = {"dx": (3,), "bx": (3,), "nx": (3,), "frustum": (D, 32, 88, 3)}

    def cbr(prefix, i, cout, cin, k, bias=True):
        expected[f"{prefix}.{i}.weight"] = (cout, cin, k, k)
        if bias:
            expected[f"{prefix}.{i}.bias"] = (cout,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{prefix}.{i + 1}.{name}"] = (cout,)
        expected[f"{prefix}.{i + 1}.num_batches_tracked"] = ()

    cbr("dtransform", 0, 8, 1, 1), cbr("dtransform", 3, 32, 8, 5), cbr("dtransform", 6, 64, 32, 5)
    cbr("depthnet", 0, 256, 256 + 64, 3), cbr("depthnet", 3, 256, 256, 3)
    expected["depthnet.6.weight"], expected["depthnet.6.bias"] = (D + C, 256, 1, 1), (D + C,)
    for i in (0, 3, 6):
        cbr("downsample", i, C, C, 3, bias=False)
    got = {k: tuple(v.shape) for k, v in vt.state_dict().items()}
    assert got == expected
    # the geometry tensors are frozen nn.Parameters in the original too (so they sit in its checkpoints)
    params = dict(vt.named_parameters())
    assert all(not params[k].requires_grad for k in ("dx", "bx", "nx", "frustum"))
    assert vt.nx.dtype == torch.long and (vt.D, vt.C) == (D, C)


@pytest.mark.parametrize("bounds", [(XB, YB, ZB), ((-54.0, 54.0, 0.6), (-51.2, 51.2, 0.4), (-10.0, 10.0, 20.0)),
                                    ((-54.0, 54.0, 0.3), (-54.0, 54.0, 0.3), (-5.0, 3.0, 0.2))])
def test_grid_and_frustum_equal_original(bounds):
    vt = DepthLSSTransform(4, 2, IMAGE, FEAT, *bounds, DB)
    torch.testing.assert_close(vt.dx, torch.tensor([r[2] for r in bounds], dtype=torch.float32))
    torch.testing.assert_close(vt.bx, torch.tensor([r[0] + r[2] / 2.0 for r in bounds], dtype=torch.float32))
    # torch.LongTensor([...float...]) truncates, as int() does: (54 + 54) / 0.6 = 180.00000000000003 -> 180
    assert vt.nx.tolist() == [int((r[1] - r[0]) / r[2]) for r in bounds]
    torch.testing.assert_close(vt.frustum.double(), _ref_frustum(), **TOL)


def test_geometry_equals_original():
    vt = _make()
    s = _scene()
    ours = vt.get_geometry(s["camera2lidar"], s["camera_intrinsics"], s["img_aug_matrix"], s["lidar_aug_matrix"])
    ref = _ref_geometry(vt.frustum, s["camera2lidar"], s["camera_intrinsics"], s["img_aug_matrix"],
                        s["lidar_aug_matrix"])
    assert ours.shape == (B, N, 12, *FEAT, 3)
    torch.testing.assert_close(ours.double(), ref, **TOL)


def test_lidar_depth_map_equals_original():
    vt = _make()
    s = _scene()
    ours = vt.depth_map(s["points"], s["lidar2image"], s["img_aug_matrix"], s["lidar_aug_matrix"], N)
    ref, hits = _ref_depth_map(s["points"], s["lidar2image"], s["img_aug_matrix"], s["lidar_aug_matrix"])
    assert ours.shape == (B, N, 1, *IMAGE)
    assert (ref > 0).sum() >= 50 and hits > (ref > 0).sum()  # points in view, and at least one shared pixel
    torch.testing.assert_close(ours.double(), ref, **TOL)


@pytest.mark.parametrize("fused", [True, False])
def test_lift_splat_forward_equals_original(fused):
    """The whole transform: depth map -> dtransform/depthnet -> depth x context -> BEV pooling -> downsample."""
    vt = _make()
    vt.fused_pool = fused
    s = _scene()
    g = torch.Generator().manual_seed(4)
    img = torch.randn(B, N, CIN, *FEAT, generator=g)
    with torch.no_grad():
        ours = vt(img, [p.clone() for p in s["points"]], **{k: v for k, v in s.items() if k != "points"})
        geom = vt.get_geometry(s["camera2lidar"], s["camera_intrinsics"], s["img_aug_matrix"],
                               s["lidar_aug_matrix"])
    sd = {k: v.double() if v.dtype.is_floating_point else v for k, v in vt.state_dict().items()}
    depth, _ = _ref_depth_map(s["points"], s["lidar2image"], s["img_aug_matrix"], s["lidar_aug_matrix"])
    feats = _ref_cam_feats(sd, img.double(), depth, vt.D, COUT)
    # cells from our float32 geometry (compared with the original's formula above), quantised the original's way
    pooled = _ref_bev_pool(geom, feats, vt.bx, vt.dx, vt.nx)
    assert pooled.shape == (B, COUT, 32, 32) and pooled.abs().sum() > 0
    ref = _ref_downsample(sd, pooled)
    assert ours.shape == (B, COUT, 16, 16)
    torch.testing.assert_close(ours.double(), ref, **TOL)


def test_lss_transform_forward_equals_original():
    """The segmentation model's LSSTransform: depth from image features only (one 1x1 depthnet)."""
    vt = _make(LSSTransform)
    s = _scene(1)
    g = torch.Generator().manual_seed(5)
    img = torch.randn(B, N, CIN, *FEAT, generator=g)
    with torch.no_grad():
        ours = vt(img, s["points"], **{k: v for k, v in s.items() if k != "points"})
        geom = vt.get_geometry(s["camera2lidar"], s["camera_intrinsics"], s["img_aug_matrix"],
                               s["lidar_aug_matrix"])
    sd = {k: v.double() if v.dtype.is_floating_point else v for k, v in vt.state_dict().items()}
    assert tuple(sd["depthnet.weight"].shape) == (vt.D + COUT, CIN, 1, 1)
    ref = _ref_downsample(sd, _ref_bev_pool(geom, _ref_cam_feats(sd, img.double(), None, vt.D, COUT), vt.bx, vt.dx,
                                            vt.nx))
    torch.testing.assert_close(ours.double(), ref, **TOL)
