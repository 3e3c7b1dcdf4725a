"""Reference equivalence with OpenMMLab's implementations (mmdet 3.3 / mmdet3d 1.4 / mmcv 2.1 CPU ops).

Same weights into our module and theirs -> identical state_dict key sets and outputs within 1e-5. Needs
`bash tests/setup_extras.sh` (builds mmcv with CPU ops); skipped, with the reason, when that stack is missing.
Our `model/` never imports mmcv: only this test does.

Covered: Swin-T (mmdet SwinTransformer), SECOND + SECONDFPN (mmdet3d), SparseEncoder (mmdet3d's, which is the
(z, y, x)-order original that BEVFusion re-ordered to (x, y, z): we map axes and kernels accordingly), and hard
voxelization (mmcv.ops.Voxelization, also (z, y, x)). GeneralizedLSSFPN / DepthLSSTransform / bev_pool live only in
mmdet3d's `projects/BEVFusion`, which is not part of the mmdet3d package.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import model  # noqa: F401

pytestmark = pytest.mark.mmdet


def _require(mod: str):
    try:
        return importlib.import_module(mod)
    except Exception as exc:  # ImportError, or mmcv's version/ops checks
        reason = (f"{mod} unavailable ({type(exc).__name__}: {exc}); run `bash tests/setup_extras.sh` to build "
                  "mmcv 2.1.0 with CPU ops and install mmdet/mmdet3d")
        print(reason)
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _randomize(module: torch.nn.Module, seed: int = 0):
    """Non-trivial weights and BN statistics, so equality is not an accident of the init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(0.5 + torch.rand(t.shape, generator=g))
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * (0.05 if t.dim() > 1 else 0.2))
    return module


def _load_same(ours: torch.nn.Module, theirs: torch.nn.Module, convert=lambda k, v: v):
    sd = ours.state_dict()
    assert set(sd) == set(theirs.state_dict()), set(sd) ^ set(theirs.state_dict())
    theirs.load_state_dict({k: convert(k, v) for k, v in sd.items()}, strict=True)


def test_swin_t_equals_mmdet():
    backbones = _require("mmdet.models.backbones")
    from model.camera.swin import SwinTransformer

    ours = _randomize(SwinTransformer()).eval()
    theirs = backbones.SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                                       mlp_ratio=4, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                                       drop_path_rate=0.2, patch_norm=True, out_indices=(1, 2, 3), with_cp=False,
                                       convert_weights=False)
    theirs.eval()  # mmdet's Swin overrides train() without returning self
    _load_same(ours, theirs)
    # an image size that needs window padding at every stage, and the BEVFusion one at 1/4 scale
    for hw in ((64, 176), (72, 100)):
        x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            a, b = ours(x), theirs(x)
        assert len(a) == len(b) == 3
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)


def test_second_and_secondfpn_equal_mmdet3d():
    backbones = _require("mmdet3d.models.backbones")
    necks = _require("mmdet3d.models.necks")
    from model.decoder import SECOND, SECONDFPN

    bn = dict(type="BN", eps=1e-3, momentum=0.01)
    ours_b, ours_n = _randomize(SECOND()).eval(), _randomize(SECONDFPN(), 1).eval()
    theirs_b = backbones.SECOND(in_channels=256, out_channels=[128, 256], layer_nums=[5, 5], layer_strides=[1, 2],
                                norm_cfg=bn, conv_cfg=dict(type="Conv2d", bias=False)).eval()
    theirs_n = necks.SECONDFPN(in_channels=[128, 256], out_channels=[256, 256], upsample_strides=[1, 2], norm_cfg=bn,
                               upsample_cfg=dict(type="deconv", bias=False), use_conv_for_no_stride=True).eval()
    _load_same(ours_b, theirs_b)
    _load_same(ours_n, theirs_n)
    x = torch.randn(2, 256, 24, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = ours_b(x), theirs_b(x)
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)
        na, nb = ours_n(a), theirs_n(list(b))
    assert na[0].shape == (2, 512, 24, 20)
    torch.testing.assert_close(na[0], nb[0], atol=1e-5, rtol=1e-5)


def _points(n=4000, seed=3):
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(80, 3, generator=g) - 0.5) * torch.tensor([20.0, 20.0, 6.0])
    xyz = centres[torch.randint(0, 80, (n,), generator=g)] + 0.3 * torch.randn(n, 3, generator=g)
    return torch.cat([xyz, torch.rand(n, 2, generator=g)], 1)


def test_sparse_encoder_equals_mmdet3d():
    middle = _require("mmdet3d.models.middle_encoders")
    from model.lidar.sparse_encoder import SparseEncoder
    from model.lidar.voxelize import Voxelization

    # a 1/8-size det geometry: sparse shape (X, Y, Z) = (160, 160, 41) in our order, (41, 160, 160) in theirs
    pcr, vs = (-12.0, -12.0, -5.0, 12.0, 12.0, 3.0), (0.15, 0.15, 0.2)
    ours = _randomize(SparseEncoder(sparse_shape=(160, 160, 41))).eval()
    theirs = middle.SparseEncoder(
        in_channels=5, sparse_shape=[41, 160, 160], order=("conv", "norm", "act"),
        norm_cfg=dict(type="BN1d", eps=1e-3, momentum=0.01), base_channels=16, output_channels=128,
        encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
        encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, [0, 1, 1]), (0, 0)), block_type="basicblock").eval()

    def to_zyx(k, v):
        # our kernels are (out, kx, ky, kz, in); theirs (out, kz, ky, kx, in) -- same offsets, axes reversed.
        # mmdet3d's loader treats a state dict without spconv-2 metadata as spconv 1.x (k..., in, out) and permutes
        # it, so hand it that layout.
        if v.dim() == 5:
            from model.lidar.sparse_encoder import to_spconv1_weight

            return to_spconv1_weight(v.permute(0, 3, 2, 1, 4))
        return v

    _load_same(ours, theirs, to_zyx)
    feats, coords, B = Voxelization(vs, pcr, 10, (20000, 20000))([_points(), _points(seed=4)])
    with torch.no_grad():
        a = ours(feats, coords, B)
        b = theirs(feats, coords[:, [0, 3, 2, 1]].contiguous(), B)
    if isinstance(b, (tuple, list)):
        b = b[0]
    assert a.shape == (2, 256, 20, 20)
    torch.testing.assert_close(a, b.transpose(-1, -2), atol=1e-5, rtol=1e-5)


def test_voxelization_equals_mmcv_ops():
    ops = _require("mmcv.ops")
    from model.lidar.voxelize import hard_voxelize

    pts = _points(6000)
    for max_voxels in (20000, 300):
        args = ((0.2, 0.2, 0.4), (-10.0, -10.0, -3.0, 10.0, 10.0, 3.0), 10, max_voxels)
        v, c, n = hard_voxelize(pts, *args)
        rv, rc, rn = ops.Voxelization(voxel_size=list(args[0]), point_cloud_range=list(args[1]), max_num_points=10,
                                      max_voxels=max_voxels, deterministic=True)(pts)
        assert torch.equal(c, rc.flip(-1).int()), "coords (theirs z, y, x)"
        assert torch.equal(n, rn.int()) and torch.equal(v, rv)
