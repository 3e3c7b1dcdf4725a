"""Model structure (full size, on the meta device), GCA, geometry ops against references. Fast: no full-size compute."""

from __future__ import annotations

import collections
import math

import pytest
import torch

import model  # noqa: F401  (applies shims)
from model.bevfusion import build_model
from model.config import get_config
from model.lidar.sparse_encoder import convert_spconv1_state_dict, convert_spconv1_weight, to_spconv1_weight
from model.lidar.voxelize import Voxelization, hard_voxelize
from model.ops.bev_pool import bev_pool, bev_pool_reference


@pytest.fixture(scope="module")
def full_task():
    return build_model(get_config("full", gca="task"), device="meta")


# Shapes from the reference key inventory; sparse-conv kernels in spconv 2 layout (out, k0, k1, k2, in).
EXPECTED = {
    "encoders.camera.backbone.patch_embed.projection.weight": (96, 3, 4, 4),
    "encoders.camera.backbone.patch_embed.norm.weight": (96,),
    "encoders.camera.backbone.stages.0.blocks.0.norm1.weight": (96,),
    "encoders.camera.backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table": (169, 3),
    "encoders.camera.backbone.stages.0.blocks.0.attn.w_msa.relative_position_index": (49, 49),
    "encoders.camera.backbone.stages.0.blocks.0.attn.w_msa.qkv.weight": (288, 96),
    "encoders.camera.backbone.stages.0.blocks.0.attn.w_msa.proj.weight": (96, 96),
    "encoders.camera.backbone.stages.0.blocks.0.ffn.layers.0.0.weight": (384, 96),
    "encoders.camera.backbone.stages.0.blocks.0.ffn.layers.1.weight": (96, 384),
    "encoders.camera.backbone.stages.0.downsample.norm.weight": (384,),
    "encoders.camera.backbone.stages.0.downsample.reduction.weight": (192, 384),
    "encoders.camera.backbone.stages.2.blocks.5.attn.w_msa.relative_position_bias_table": (169, 12),
    "encoders.camera.backbone.norm1.weight": (192,),
    "encoders.camera.backbone.norm2.weight": (384,),
    "encoders.camera.backbone.norm3.bias": (768,),
    "encoders.camera.neck.lateral_convs.0.conv.weight": (256, 448, 1, 1),
    "encoders.camera.neck.lateral_convs.1.conv.weight": (256, 1152, 1, 1),
    "encoders.camera.neck.fpn_convs.1.conv.weight": (256, 256, 3, 3),
    "encoders.camera.neck.fpn_convs.0.bn.num_batches_tracked": (),
    "encoders.camera.vtransform.dx": (3,),
    "encoders.camera.vtransform.bx": (3,),
    "encoders.camera.vtransform.nx": (3,),
    "encoders.camera.vtransform.frustum": (118, 32, 88, 3),
    "encoders.camera.vtransform.dtransform.0.weight": (8, 1, 1, 1),
    "encoders.camera.vtransform.dtransform.3.weight": (32, 8, 5, 5),
    "encoders.camera.vtransform.dtransform.6.weight": (64, 32, 5, 5),
    "encoders.camera.vtransform.dtransform.7.running_var": (64,),
    "encoders.camera.vtransform.depthnet.0.weight": (256, 320, 3, 3),
    "encoders.camera.vtransform.depthnet.3.weight": (256, 256, 3, 3),
    "encoders.camera.vtransform.depthnet.6.weight": (198, 256, 1, 1),
    "encoders.camera.vtransform.depthnet.6.bias": (198,),
    "encoders.camera.vtransform.downsample.3.weight": (80, 80, 3, 3),
    "encoders.camera.vtransform.downsample.7.weight": (80,),
    "encoders.lidar.backbone.conv_input.0.weight": (16, 3, 3, 3, 5),
    "encoders.lidar.backbone.conv_input.1.running_mean": (16,),
    "encoders.lidar.backbone.encoder_layers.encoder_layer1.0.conv1.weight": (16, 3, 3, 3, 16),
    "encoders.lidar.backbone.encoder_layers.encoder_layer1.0.bn1.weight": (16,),
    "encoders.lidar.backbone.encoder_layers.encoder_layer1.1.conv2.weight": (16, 3, 3, 3, 16),
    "encoders.lidar.backbone.encoder_layers.encoder_layer1.2.0.weight": (32, 3, 3, 3, 16),
    "encoders.lidar.backbone.encoder_layers.encoder_layer1.2.1.weight": (32,),
    "encoders.lidar.backbone.encoder_layers.encoder_layer3.2.0.weight": (128, 3, 3, 3, 64),
    "encoders.lidar.backbone.encoder_layers.encoder_layer4.1.conv2.weight": (128, 3, 3, 3, 128),
    "encoders.lidar.backbone.conv_out.0.weight": (128, 1, 1, 3, 128),
    "encoders.lidar.backbone.conv_out.1.bias": (128,),
    "fuser.0.weight": (256, 336, 3, 3),
    "fuser.1.running_var": (256,),
    "decoder.backbone.blocks.0.0.weight": (128, 256, 3, 3),
    "decoder.backbone.blocks.0.15.weight": (128, 128, 3, 3),
    "decoder.backbone.blocks.0.16.weight": (128,),
    "decoder.backbone.blocks.1.0.weight": (256, 128, 3, 3),
    "decoder.backbone.blocks.1.15.weight": (256, 256, 3, 3),
    "decoder.neck.deblocks.0.0.weight": (256, 128, 1, 1),
    "decoder.neck.deblocks.1.0.weight": (256, 256, 2, 2),
    "decoder.neck.deblocks.1.1.running_mean": (256,),
    "task_gca.object.reduce.weight": (128, 512, 1, 1),
    "task_gca.object.expand.weight": (512, 128, 1, 1),
    "task_gca.map.reduce.weight": (128, 512, 1, 1),
    "heads.object.shared_conv.weight": (128, 512, 3, 3),
    "heads.object.decoder.0.self_attn.in_proj_weight": (384, 128),
    "heads.object.prediction_heads.0.heatmap.1.weight": (10, 64, 1),
    "heads.map.classifier.0.weight": (512, 512, 3, 3),
    "heads.map.classifier.6.weight": (6, 512, 1, 1),
}


def test_full_keys_and_shapes(full_task):
    sd = full_task.state_dict()
    wrong = {k: (tuple(sd[k].shape) if k in sd else None, v) for k, v in EXPECTED.items()
             if k not in sd or tuple(sd[k].shape) != v}
    assert not wrong, wrong
    assert all(t.is_meta for t in sd.values())
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {"encoders", "fuser", "decoder", "task_gca", "heads"}
    # no stray keys from our own implementation choices (e.g. cached masks): every Swin key is mmdet's
    swin = [k for k in sd if k.startswith("encoders.camera.backbone.")]
    assert len(swin) == 4 + 12 * 14 + 3 * 3 + 3 * 2, len(swin)  # patch_embed, blocks, downsamples, out norms
    assert not any(k.startswith("encoders.lidar.voxelize") for k in sd)


def test_spconv_kernel_layout_conversion(full_task):
    sd = full_task.state_dict()
    ours = sd["encoders.lidar.backbone.conv_out.0.weight"]
    w1 = torch.randn(1, 1, 3, 128, 64)  # spconv 1.x (k0, k1, k2, in, out)
    w2 = convert_spconv1_weight(w1)
    assert tuple(w2.shape) == (64, 1, 1, 3, 128)
    assert torch.equal(to_spconv1_weight(w2), w1)
    assert torch.equal(w2[5, 0, 0, 2, 7], w1[0, 0, 2, 7, 5])
    expected = {k: tuple(v.shape) for k, v in sd.items()}
    orig = {"encoders.lidar.backbone.conv_out.0.weight": torch.zeros(1, 1, 3, 128, 128).uniform_(),
            "encoders.lidar.backbone.conv_input.0.weight": torch.zeros(3, 3, 3, 5, 16),
            "fuser.0.weight": torch.zeros(256, 336, 3, 3)}
    conv = convert_spconv1_state_dict(orig, expected)
    assert tuple(conv["encoders.lidar.backbone.conv_input.0.weight"].shape) == (16, 3, 3, 3, 5)
    assert tuple(conv["encoders.lidar.backbone.conv_out.0.weight"].shape) == tuple(ours.shape)
    assert conv["fuser.0.weight"] is orig["fuser.0.weight"]
    # an already-converted dict passes through unchanged
    again = convert_spconv1_state_dict(conv, expected)
    assert again["encoders.lidar.backbone.conv_out.0.weight"] is conv["encoders.lidar.backbone.conv_out.0.weight"]


@pytest.mark.parametrize("mode,names", [("task", {"object", "map"}), ("shared", {"shared"}), ("none", set())])
def test_gca_modes(mode, names):
    m = build_model(get_config("full", gca=mode), device="meta")
    params = m.gca_params()
    assert set(params) == names
    assert all(v == 131_072 for v in params.values())
    gca_keys = {k for k in m.state_dict() if k.startswith("task_gca.")}
    assert {k.split(".")[1] for k in gca_keys} == names


def test_gca_is_a_channel_gate():
    from model.gca import GCA

    g = GCA(512, 4)
    assert sum(p.numel() for p in g.parameters()) == 131_072
    x = torch.randn(2, 512, 6, 5)
    y = g(x)
    ratio = y / x
    # one factor per (sample, channel), in (0, 1)
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-5)
    assert (ratio > 0).all() and (ratio < 1).all()


def test_heads_subset_and_config_geometry():
    cfg = get_config("full", gca="task", heads=("map",))
    m = build_model(cfg, device="meta")
    assert set(m.heads) == {"map"} and set(m.gca_params()) == {"map"}
    full = get_config("full")
    assert full.sparse_shape == (1440, 1440, 41) and full.bev_size == (180, 180) and full.map_size == (200, 200)
    assert full.lidar_bev_channels == 256 and full.decoder_channels == 512
    assert full.map_head.input_scope[0][:2] == (-54.0, 54.0)
    with pytest.raises(ValueError):
        get_config("full", gca="bogus")
    with pytest.raises(ValueError):
        get_config("nope")


def test_yaml_override(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text("base: tiny\nobject_head: {num_proposals: 20}\ncamera: {backbone: {embed_dims: 8}}\n")
    cfg = get_config(str(p), gca="shared")
    assert cfg.name == "small" and cfg.object_head.num_proposals == 20 and cfg.camera.backbone.embed_dims == 8
    assert cfg.gca.mode == "shared"
    p.write_text("base: tiny\nnot_a_field: 1\n")
    with pytest.raises(ValueError, match="not_a_field"):
        get_config(str(p))


# ------------------------------------------------------------------------------------------- bev_pool


def _random_pool_inputs(B=2, P=5000, C=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    bx = torch.tensor([-9.75, -9.75, 0.0])
    dx = torch.tensor([0.5, 0.5, 20.0])
    nx = torch.tensor([40, 40, 1])
    geom = (torch.rand(B, P, 3, generator=g) - 0.5) * torch.tensor([26.0, 26.0, 30.0])  # some points outside
    feats = torch.randn(B, P, C, generator=g)
    return feats, geom, bx, dx, nx


def test_bev_pool_matches_reference():
    feats, geom, bx, dx, nx = _random_pool_inputs()
    out = bev_pool(feats, geom, bx, dx, nx)
    ref = bev_pool_reference(feats, geom, bx, dx, nx)
    assert out.shape == (2, 7, 40, 40)
    assert (ref != 0).any() and (ref == 0).any()
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-5)


def test_bev_pool_multi_z_layout_and_grad():
    feats, geom, bx, dx, nx = _random_pool_inputs(B=1, P=3000, C=3, seed=1)
    nx2, dx2, bx2 = torch.tensor([40, 40, 3]), torch.tensor([0.5, 0.5, 10.0]), torch.tensor([-9.75, -9.75, -10.0])
    out = bev_pool(feats, geom, bx2, dx2, nx2)
    torch.testing.assert_close(out.double(), bev_pool_reference(feats, geom, bx2, dx2, nx2), rtol=1e-6, atol=1e-5)
    f64 = feats[:, :200].double().requires_grad_()
    assert torch.autograd.gradcheck(lambda f: bev_pool(f, geom[:, :200], bx, dx, nx), (f64,), eps=1e-6)


def _cell_index_int64(geom, bx, dx, nx):
    """The original's steps in int64: quantise with .long(), range-check, flatten (b, z, x, y)."""
    B = geom.shape[0]
    X, Y, Z = (int(v) for v in nx.tolist())
    g = ((geom.reshape(B, -1, 3) - (bx - dx / 2.0)) / dx).long()
    inside = ((g >= 0) & (g < nx)).all(-1)
    idx = ((torch.arange(B).view(B, 1) * Z + g[..., 2]) * X + g[..., 0]) * Y + g[..., 1]
    return torch.where(inside, idx, B * X * Y * Z).reshape(-1)


@pytest.mark.parametrize("nx", [(40, 40, 1), (40, 40, 3), (3000, 3000, 2)])  # the last needs float64 indices
def test_cell_index_matches_int64_quantisation_at_the_edges(nx):
    from model.ops.bev_pool import cell_index

    nx = torch.tensor(nx)
    dx, bx = torch.tensor([0.5, 0.5, 10.0]), torch.tensor([-9.75, -9.75, -10.0])
    lo, hi = bx - dx / 2, bx - dx / 2 + dx * nx
    g = torch.Generator().manual_seed(3)
    geom = lo + (torch.rand(3, 4000, 3, generator=g) * 1.2 - 0.1) * (hi - lo)
    # exactly on the boundaries: one cell below the lower edge truncates to cell 0; the upper edge is outside
    edges = torch.stack([lo - dx, lo - dx * 0.99, lo, hi - 1e-3, hi, hi + dx]).repeat(3, 1, 1)
    geom = torch.cat([geom, edges], 1)
    got = cell_index(geom, bx, dx, nx)
    assert got.dtype == torch.int64 and torch.equal(got, _cell_index_int64(geom, bx, dx, nx))
    assert torch.equal(cell_index(geom, bx, dx, nx, torch.int32).long(), got)
    assert geom.shape == (3, 4006, 3)  # not modified in place
    for dtype in (torch.float64, torch.bfloat16):  # quantised in the promoted dtype, as `geom - bx` would be
        assert torch.equal(cell_index(geom.to(dtype), bx, dx, nx), _cell_index_int64(geom.to(dtype), bx, dx, nx))
    bad = torch.tensor([[[float("nan"), 0.0, 0.0], [float("inf"), 0.0, 0.0], [0.0, -float("inf"), 0.0]]])
    assert cell_index(bad, bx, dx, nx).tolist() == [int(nx.prod())] * 3  # the dump cell


def test_bev_pool_cpu_and_device_paths_agree(monkeypatch):
    """The CPU path (sort + embedding_bag) and the CUDA path (index_add_ / CSR products, forced here on CPU)
    give the same pooled maps and gradients."""
    import model.ops.bev_pool as bp

    g = torch.Generator().manual_seed(7)
    B, N, D, H, W, C = 2, 2, 6, 3, 5, 4
    bx, dx, nx = torch.tensor([-9.75, -9.75, -10.0]), torch.tensor([0.5, 0.5, 10.0]), torch.tensor([40, 40, 2])
    geom = (torch.rand(B, N, D, H, W, 3, generator=g) - 0.5) * torch.tensor([8.0, 8.0, 30.0])
    depth = torch.rand(B, N, D, H, W, generator=g)
    context = torch.randn(B, N, C, H, W, generator=g)
    feats = torch.randn(B, N, D, H, W, C, generator=g)
    grad = torch.randn(B, C * 2, 40, 40, generator=g)

    def run():
        d, c, f = (t.clone().requires_grad_() for t in (depth, context, feats))
        lifted, pooled = bp.bev_pool_lift(d, c, geom, bx, dx, nx), bp.bev_pool(f, geom, bx, dx, nx)
        ((lifted + pooled) * grad).sum().backward()
        return lifted, pooled, d.grad, c.grad, f.grad

    fast = run()
    monkeypatch.setattr(bp, "_cpu_fast", lambda t: False)
    slow = run()
    assert (fast[0] != 0).any() and (fast[1] != 0).any()
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_vtransform_geometry_round_trip():
    """Frustum points projected back through lidar2image (and the image aug) land on their pixel and depth."""
    from model.camera.vtransform import DepthLSSTransform

    from tests.helpers.model_batch import make_batch

    cfg = get_config("tiny")
    vt = DepthLSSTransform(32, 16, cfg.image_size, cfg.feature_size, (-54, 54, 0.9), (-54, 54, 0.9), (-10, 10, 20),
                           (1, 60, 2.5), 2)
    b = make_batch(cfg, batch_size=1)
    aug = torch.eye(4)
    aug[:2, :2] = torch.tensor([[0.8, -0.1], [0.1, 0.8]])
    aug[:2, 3] = torch.tensor([5.0, -3.0])
    laug = torch.eye(4)
    c, s = math.cos(0.3), math.sin(0.3)
    laug[:2, :2] = torch.tensor([[c, -s], [s, c]])
    laug[:3, 3] = torch.tensor([1.0, 2.0, 0.5])
    img_aug = aug.expand(1, cfg.num_cameras, 4, 4)
    lidar_aug = laug.expand(1, 4, 4)
    geom = vt.get_geometry(b["camera2lidar"], b["camera_intrinsics"], img_aug, lidar_aug)  # 1, N, D, fH, fW, 3
    pts = geom[0, 2].reshape(-1, 3)
    pts = (pts - laug[:3, 3]) @ torch.inverse(laug[:3, :3]).T
    cam = b["lidar2image"][0, 2, :3, :3] @ pts.T + b["lidar2image"][0, 2, :3, 3:]
    uv = cam[:2] / cam[2:]
    uv = aug[:2, :2] @ uv + aug[:2, 3:]
    fr = vt.frustum.reshape(-1, 3)
    torch.testing.assert_close(uv.T, fr[:, :2], atol=1e-2, rtol=1e-4)
    torch.testing.assert_close(cam[2], fr[:, 2], atol=1e-3, rtol=1e-4)
    # LiDAR points land in the depth map at their projected depth
    depth = vt.depth_map(b["points"], b["lidar2image"], b["img_aug_matrix"], b["lidar_aug_matrix"], cfg.num_cameras)
    assert depth.shape == (1, cfg.num_cameras, 1, *cfg.image_size)
    assert (depth > 0).sum() > 100 and depth.max() < 80


# ------------------------------------------------------------------------------------------- voxelization


def _voxelize_reference(points, voxel_size, pc_range, max_points, max_voxels):
    """The original CUDA op's semantics, one point at a time."""
    vs = torch.tensor(voxel_size, dtype=points.dtype)
    lo = torch.tensor(pc_range[:3], dtype=points.dtype)
    grid = torch.round((torch.tensor(pc_range[3:], dtype=points.dtype) - lo) / vs).long().tolist()
    slots: dict[tuple, int] = {}
    voxels, coords, counts = [], [], []
    for p in points:
        c = torch.floor((p[:3] - lo) / vs).long().tolist()
        if any(ci < 0 or ci >= g for ci, g in zip(c, grid)):
            continue
        key = tuple(c)
        if key not in slots:
            if len(slots) >= max_voxels:
                continue
            slots[key] = len(slots)
            voxels.append(torch.zeros(max_points, points.shape[1], dtype=points.dtype))
            coords.append(c)
            counts.append(0)
        v = slots[key]
        if counts[v] < max_points:
            voxels[v][counts[v]] = p
            counts[v] += 1
    return torch.stack(voxels), torch.tensor(coords, dtype=torch.int32), torch.tensor(counts, dtype=torch.int32)


@pytest.mark.parametrize("max_voxels", [10_000, 150])
def test_voxelize_matches_reference(max_voxels):
    g = torch.Generator().manual_seed(3)
    # clustered points so voxels overflow max_points; some outside the range
    centres = (torch.rand(60, 3, generator=g) - 0.5) * torch.tensor([14.0, 14.0, 10.0])
    pts = centres[torch.randint(0, 60, (3000,), generator=g)] + 0.15 * torch.randn(3000, 3, generator=g)
    pts = torch.cat([pts, torch.rand(3000, 2, generator=g)], 1)
    args = ((0.2, 0.2, 0.4), (-6.0, -6.0, -3.0, 6.0, 6.0, 3.0), 10, max_voxels)
    v, c, n = hard_voxelize(pts, *args)
    rv, rc, rn = _voxelize_reference(pts, *args)
    assert n.max() == 10 and len(rn) == len(n)
    assert torch.equal(c, rc) and torch.equal(n, rn) and torch.equal(v, rv)


def test_voxelization_module_mean_and_batch_index():
    pts = [torch.tensor([[0.01, 0.01, 0.01, 1.0, 0.0], [0.02, 0.03, 0.04, 3.0, 0.0], [5.0, 5.0, 0.0, 1.0, 0.0]]),
           torch.tensor([[-1.0, 2.0, 0.5, 2.0, 0.1], [100.0, 0.0, 0.0, 1.0, 0.0]])]
    vox = Voxelization((0.075, 0.075, 0.2), (-54, -54, -5, 54, 54, 3), 10, (120000, 160000)).train()
    feats, coords, B = vox(pts)
    assert B == 2 and feats.shape == (3, 5) and coords.dtype == torch.int32
    torch.testing.assert_close(feats[0], torch.tensor([0.015, 0.02, 0.025, 2.0, 0.0]))
    assert coords[0].tolist() == [0, 720, 720, 25] and coords[2].tolist()[0] == 1


# ------------------------------------------------------------------------------------------- spconv shim


@pytest.mark.parametrize("subm", [True, False])
def test_spconv_cpu_matches_dense_conv_with_threads(subm):
    """spconv 2.3's CPU kernels race with >1 torch thread (see model/shims.py); with the shim they are exact."""
    import spconv.pytorch as spconv
    import torch.nn.functional as F

    n_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        shape = [64, 64, 33]
        cen = torch.stack([torch.randint(0, s, (60,), generator=g) for s in shape], 1)
        c = cen[torch.randint(0, 60, (4000,), generator=g)] + torch.randint(-2, 3, (4000, 3), generator=g)
        c = torch.unique(c.clamp(min=0).minimum(torch.tensor(shape) - 1), dim=0)
        c = torch.cat([torch.zeros(len(c), 1, dtype=torch.long), c], 1).int()
        f = torch.randn(len(c), 4, generator=g, requires_grad=True)
        conv = (spconv.SubMConv3d if subm else spconv.SparseConv3d)(4, 3, 3, padding=1, bias=False)
        x = spconv.SparseConvTensor(f, c, shape, 1)
        y = conv(x).dense()
        dense_in = x.dense()
        ref = F.conv3d(dense_in, conv.weight.permute(0, 4, 1, 2, 3), padding=1)
        if subm:
            ref = ref * (dense_in.abs().sum(1, keepdim=True) > 0)
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
        gy = torch.randn(y.shape, generator=g)
        (gf,) = torch.autograd.grad((y * gy).sum(), f)
        f2 = f.detach().clone().requires_grad_()
        dense2 = spconv.SparseConvTensor(f2, c, shape, 1).dense()
        ref2 = F.conv3d(dense2, conv.weight.detach().permute(0, 4, 1, 2, 3), padding=1)
        if subm:
            ref2 = ref2 * (dense_in.abs().sum(1, keepdim=True) > 0)
        (gf_ref,) = torch.autograd.grad((ref2 * gy).sum(), f2)
        torch.testing.assert_close(gf, gf_ref, atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(n_threads)


def test_summary_table(capsys):
    from model.summary import main

    assert main(["--config", "full", "--json"]) == 0
    out = __import__("json").loads(capsys.readouterr().out)
    assert out["gca_params"] == {"object": 131072, "map": 131072}
    assert out["modules"]["task_gca.object"]["params"] == 131072
    assert out["trainable"] == sum(r["params"] for r in out["modules"].values())
    assert main(["--config", "tiny", "--gca", "none"]) == 0
    assert "decoder.backbone" in capsys.readouterr().out


def test_fused_lift_splat_equals_materialised_pool():
    from model.ops.bev_pool import bev_pool_lift

    g = torch.Generator().manual_seed(5)
    B, N, D, H, W, C = 2, 3, 5, 4, 6, 7
    bx, dx, nx = torch.tensor([-9.75, -9.75, -10.0]), torch.tensor([0.5, 0.5, 10.0]), torch.tensor([40, 40, 2])
    geom = (torch.rand(B, N, D, H, W, 3, generator=g) - 0.5) * torch.tensor([8.0, 8.0, 30.0])  # crowded, some out
    depth = torch.rand(B, N, D, H, W, generator=g, dtype=torch.float64).requires_grad_()
    context = torch.randn(B, N, C, H, W, generator=g, dtype=torch.float64).requires_grad_()
    fused = bev_pool_lift(depth, context, geom, bx, dx, nx)
    feats = (depth.unsqueeze(2) * context.unsqueeze(3)).permute(0, 1, 3, 4, 5, 2)
    ref = bev_pool_reference(feats.detach(), geom, bx, dx, nx)
    torch.testing.assert_close(fused.double(), ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(fused.shape, generator=g)
    ga = torch.autograd.grad((fused * grad).sum(), (depth, context))
    gb = torch.autograd.grad((bev_pool(feats, geom, bx, dx, nx) * grad).sum(), (depth, context))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_vtransform_forward_equals_original_lift_then_pool():
    from model.camera.vtransform import DepthLSSTransform

    from tests.helpers.model_batch import make_batch

    cfg = get_config("tiny")
    torch.manual_seed(0)
    vt = DepthLSSTransform(32, 16, cfg.image_size, cfg.feature_size, (-54, 54, 0.9), (-54, 54, 0.9), (-10, 10, 20),
                           (1, 60, 2.5), 2).eval()
    b = make_batch(cfg, batch_size=1)
    img = torch.randn(1, cfg.num_cameras, 32, *cfg.feature_size)
    kw = {k: b[k] for k in ("camera_intrinsics", "camera2lidar", "lidar2image", "img_aug_matrix", "lidar_aug_matrix")}
    with torch.no_grad():
        out = vt(img, b["points"], **kw)
        geom = vt.get_geometry(b["camera2lidar"], b["camera_intrinsics"], b["img_aug_matrix"], b["lidar_aug_matrix"])
        dm = vt.depth_map(b["points"], b["lidar2image"], b["img_aug_matrix"], b["lidar_aug_matrix"], cfg.num_cameras)
        ref = vt.downsample(vt.bev_pool(geom, vt.get_cam_feats(img, dm)))
    assert out.shape == (1, 16, 60, 60)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    vt.fused_pool = False
    with torch.no_grad():
        torch.testing.assert_close(vt(img, b["points"], **kw), ref, rtol=1e-4, atol=1e-4)


def test_original_layout_checkpoint_round_trip():
    """A state dict in the original's spconv 1.x layout loads (strict) after `convert_spconv1_state_dict`."""
    net = build_model(get_config("tiny"))
    sd = net.state_dict()
    original = {k: (to_spconv1_weight(v) if v.dim() == 5 else v) for k, v in sd.items()}
    assert any(v.dim() == 5 and v.shape != sd[k].shape for k, v in original.items())
    converted = convert_spconv1_state_dict(original, {k: tuple(v.shape) for k, v in sd.items()})
    # A saved state dict carries its modules' versions. Without them, mmdet3d's spconv patch (active once the
    # equivalence tests have imported mmdet3d in this process) would permute the kernels a second time.
    converted = collections.OrderedDict(converted)
    converted._metadata = sd._metadata
    fresh = build_model(get_config("tiny"))
    fresh.load_state_dict(converted, strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_lss_transform_variant_keys(tmp_path):
    """The segmentation model's camera-only-depth LSSTransform: `depthnet` is a single 1x1 conv."""
    p = tmp_path / "seg.yaml"
    p.write_text("camera: {vtransform: {type: LSSTransform}}\n")
    sd = build_model(get_config(str(p), gca="none", heads=("map",)), device="meta").state_dict()
    assert tuple(sd["encoders.camera.vtransform.depthnet.weight"].shape) == (198, 256, 1, 1)
    assert not any(".dtransform." in k for k in sd)
