"""The two BEVFusion heads (model/heads): key layout, geometry conventions, targets, losses, a tiny overfit."""

import math

import pytest

torch = pytest.importorskip("torch")
shapely_geometry = pytest.importorskip("shapely.geometry")

from model.heads import BEVSegHeadConfig, BEVSegmentationHead, TransFusionHead, TransFusionHeadConfig  # noqa: E402
from model.heads.assigner import HungarianAssigner3D  # noqa: E402
from model.heads.box_coder import TransFusionBBoxCoder  # noqa: E402
from model.heads.iou3d import bev_overlap, box_corners_bev, box_iou_3d  # noqa: E402
from model.heads.losses import gaussian_focal_loss, sigmoid_focal_loss  # noqa: E402

# 32 x 32 BEV cells of 1 m over [-16, 16] m: small enough for CPU, same code paths as the full head.
TINY = dict(in_channels=32, hidden_channel=32, num_heads=4, ffn_channel=64, num_proposals=20, head_conv=32,
            point_cloud_range=(-16.0, -16.0, -5.0, 16.0, 16.0, 3.0), voxel_size=(0.5, 0.5, 0.2), out_size_factor=2,
            post_center_range=(-20.0, -20.0, -10.0, 20.0, 20.0, 10.0))


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny: with 2 intra-op threads on a busy 2-core machine, thread hand-offs dominate
    # (observed ~100x slower than 1 thread).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_head(**kw) -> TransFusionHead:
    torch.manual_seed(0)
    return TransFusionHead(TransFusionHeadConfig(**{**TINY, **kw}))


# ---------------------------------------------------------------------------------------------------- keys


def test_object_head_keys_and_shapes_match_original():
    with torch.device("meta"):
        head = TransFusionHead()
    sd = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    expected = {
        "shared_conv.weight": (128, 512, 3, 3), "shared_conv.bias": (128,),
        "heatmap_head.0.conv.weight": (128, 128, 3, 3), "heatmap_head.0.bn.running_var": (128,),
        "heatmap_head.1.weight": (10, 128, 3, 3), "heatmap_head.1.bias": (10,),
        "class_encoding.weight": (128, 10, 1), "class_encoding.bias": (128,),
        "decoder.0.self_attn.in_proj_weight": (384, 128), "decoder.0.self_attn.in_proj_bias": (384,),
        "decoder.0.self_attn.out_proj.weight": (128, 128), "decoder.0.multihead_attn.in_proj_weight": (384, 128),
        "decoder.0.multihead_attn.out_proj.bias": (128,),
        "decoder.0.linear1.weight": (256, 128), "decoder.0.linear2.weight": (128, 256),
        "decoder.0.norm1.weight": (128,), "decoder.0.norm3.bias": (128,),
        "decoder.0.self_posembed.position_embedding_head.0.weight": (128, 2, 1),
        "decoder.0.self_posembed.position_embedding_head.1.running_mean": (128,),
        "decoder.0.cross_posembed.position_embedding_head.3.weight": (128, 128, 1),
    }
    for name, out in {"center": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2, "heatmap": 10}.items():
        expected[f"prediction_heads.0.{name}.0.conv.weight"] = (64, 128, 1)
        expected[f"prediction_heads.0.{name}.0.bn.weight"] = (64,)
        expected[f"prediction_heads.0.{name}.1.weight"] = (out, 64, 1)
        expected[f"prediction_heads.0.{name}.1.bias"] = (out,)
    for k, shape in expected.items():
        assert sd.get(k) == shape, k
    assert not any("bev_pos" in k for k in sd)
    assert not any(k.startswith("prediction_heads.0.") and k.endswith("0.conv.bias") for k in sd)
    assert "heatmap_head.0.conv.bias" not in sd
    assert len(sd) == 96
    assert sum(p.numel() for p in head.parameters()) == 1_034_910
    # bev_pos is real (not meta) even on a meta-built head, so the config's grid is usable right away.
    assert head.bev_pos.device.type == "cpu" and head.bev_pos.shape == (1, 180 * 180, 2)


def test_map_head_keys_and_shapes_match_original():
    with torch.device("meta"):
        head = BEVSegmentationHead()
    sd = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert sd["classifier.0.weight"] == (512, 512, 3, 3)
    assert sd["classifier.3.weight"] == (512, 512, 3, 3)
    assert sd["classifier.1.running_mean"] == (512,) and sd["classifier.4.weight"] == (512,)
    assert sd["classifier.6.weight"] == (6, 512, 1, 1) and sd["classifier.6.bias"] == (6,)
    assert "classifier.0.bias" not in sd and "classifier.3.bias" not in sd
    assert {k.split(".")[1] for k in sd} == {"0", "1", "3", "4", "6"}


# ---------------------------------------------------------------------------------------------------- geometry


def _random_boxes(n, gen):
    b = torch.zeros(n, 7, dtype=torch.float64)
    b[:, :2] = torch.rand(n, 2, generator=gen) * 8 - 4
    b[:, 2] = torch.rand(n, generator=gen)
    b[:, 3:6] = torch.rand(n, 3, generator=gen) * 4 + 0.3
    b[:, 6] = torch.rand(n, generator=gen) * 2 * math.pi - math.pi
    return b


def test_rotated_bev_overlap_matches_shapely():
    gen = torch.Generator().manual_seed(0)
    b1, b2 = _random_boxes(40, gen), _random_boxes(30, gen)
    b2[:4] = b1[:4]  # identical pairs
    b2[4:6] = b1[4:6]
    b2[4:6, 6] += math.pi / 2  # same centre, turned 90 degrees
    b2[6, :2] = b1[6, :2] + torch.tensor([50.0, 0.0], dtype=torch.float64)  # far away
    ours = bev_overlap(b1.float(), b2.float()).double()
    c1, c2 = box_corners_bev(b1).numpy(), box_corners_bev(b2).numpy()
    poly = shapely_geometry.Polygon
    ref = torch.tensor([[poly(c1[i]).intersection(poly(c2[j])).area for j in range(len(b2))]
                        for i in range(len(b1))], dtype=torch.float64)
    assert (ref > 0).sum() > 100  # the random set really exercises overlaps
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()
    # Corners are counter-clockwise: shapely's signed area is positive.
    assert poly(c1[0]).exterior.is_ccw


def test_iou_3d_identical_disjoint_and_half():
    box = torch.tensor([[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.7]])
    assert torch.allclose(box_iou_3d(box, box), torch.ones(1, 1), atol=1e-5)
    above = box.clone()
    above[0, 2] += 2.0  # no height overlap
    assert box_iou_3d(box, above).item() == 0.0
    shifted = box.clone()
    shifted[0, 0] += 2.0 * math.cos(0.7)  # half a length along the heading
    shifted[0, 1] += 2.0 * math.sin(0.7)
    assert box_iou_3d(box, shifted).item() == pytest.approx(1 / 3, abs=1e-4)


def test_box_coder_roundtrip():
    coder = TransFusionBBoxCoder((-54, -54), 8, (0.075, 0.075), code_size=10)
    boxes = torch.tensor([[10.0, -5.0, 0.3, 4.5, 1.9, 1.6, 2.5, 1.0, -2.0]])
    t = coder.encode(boxes)
    assert t[0, 0].item() == pytest.approx(64 / 0.6) and t[0, 1].item() == pytest.approx(49 / 0.6)
    dec = coder.decode(torch.ones(1, 10, 1), t[:, 6:8, None].permute(1, 0, 2).reshape(1, 2, 1),
                       t[:, 3:6].T[None], t[:, 0:2].T[None], t[:, 2:3].T[None], t[:, 8:10].T[None])
    assert torch.allclose(dec[0]["bboxes"], boxes, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- targets


def test_assigner_picks_the_obvious_matching():
    gt = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],
                       [10.0, 5.0, 0.0, 1.0, 1.0, 1.7, 0.0],
                       [-8.0, 3.0, 0.0, 2.0, 2.0, 2.0, 1.0]])
    labels = torch.tensor([0, 8, 5])
    # Predictions: slightly perturbed copies of the GT in a shuffled order plus two far-away distractors.
    perm = torch.tensor([2, 0, 1])
    pred = torch.cat([gt[perm] + 0.1, torch.tensor([[30.0, 30.0, 0, 1, 1, 1, 0], [-30.0, 30.0, 0, 1, 1, 1, 0]])])
    logits = torch.full((5, 10), -4.0)
    logits[torch.arange(3), labels[perm]] = 2.0
    res = HungarianAssigner3D().assign(pred, gt, labels, logits, (-54, -54, -5, 54, 54, 3))
    assert res.assigned_gt_inds.tolist() == [3, 1, 2, 0, 0]
    assert res.labels.tolist() == [5, 0, 8, -1, -1]
    assert (res.max_overlaps[:3] > 0.5).all() and (res.max_overlaps[3:] == 0).all()


def test_heatmap_target_peak_at_box_centre_cell():
    head = tiny_head()
    boxes = torch.tensor([[3.6, -7.2, 0.0, 4.0, 2.0, 1.5, 0.3], [-10.5, 9.9, 0.0, 0.7, 0.7, 1.8, 0.0]])
    hm = head._heatmap_target(boxes, torch.tensor([1, 8]), torch.device("cpu"))
    assert hm.shape == (10, 32, 32)
    for (x, y), c in zip([(3.6, -7.2), (-10.5, 9.9)], [1, 8]):
        ix, iy = int(x + 16), int(y + 16)  # 1 m cells from -16: dim 1 = x, dim 2 = y
        assert hm[c, ix, iy].item() == 1.0
        assert hm[c].argmax().item() == ix * 32 + iy
        # Gaussian falls off; min_radius 2 gives non-zero neighbours two cells away.
        assert 0 < hm[c, ix + 2, iy].item() < hm[c, ix + 1, iy].item() < 1
    assert hm.eq(1).sum().item() == 2 and hm[[0, 2, 3, 4, 5, 6, 7, 9]].sum() == 0


def _reference_heatmap(boxes, labels, size, cell, origin, overlap=0.1, min_radius=2):
    """A per-box loop written straight from CenterNet's recipe (what the vectorised target must equal)."""
    hm = torch.zeros(10, size, size)
    for box, c in zip(boxes.tolist(), labels.tolist()):
        h, w = box[3] / cell, box[4] / cell
        b1, c1 = h + w, w * h * (1 - overlap) / (1 + overlap)
        b2, c2 = 2 * (h + w), (1 - overlap) * w * h
        b3, c3 = -2 * overlap * (h + w), (overlap - 1) * w * h
        r = min((b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2, (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2,
                (b3 + math.sqrt(b3 ** 2 - 16 * overlap * c3)) / 2)
        r = max(min_radius, int(r))
        ix, iy = int((box[0] - origin) / cell), int((box[1] - origin) / cell)
        sigma = (2 * r + 1) / 6
        for i in range(ix - r, ix + r + 1):
            for j in range(iy - r, iy + r + 1):
                if 0 <= i < size and 0 <= j < size:
                    g = math.exp(-((i - ix) ** 2 + (j - iy) ** 2) / (2 * sigma * sigma))
                    hm[c, i, j] = max(hm[c, i, j].item(), g)
    return hm


def test_vectorised_heatmap_equals_per_box_reference():
    head = tiny_head()
    gen = torch.Generator().manual_seed(3)
    boxes = torch.zeros(25, 9)
    boxes[:, :2] = torch.rand(25, 2, generator=gen) * 31.9 - 15.95  # includes boxes at the map border
    boxes[:, 3:6] = torch.rand(25, 3, generator=gen) * 12 + 0.3  # up to bus size: radii > min_radius
    labels = torch.randint(0, 10, (25,), generator=gen)
    ours = head._heatmap_target(boxes, labels, torch.device("cpu"))
    ref = _reference_heatmap(boxes, labels, 32, 1.0, -16.0)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert head._heatmap_target(torch.zeros(0, 9), torch.zeros(0, dtype=torch.long), torch.device("cpu")).sum() == 0


def test_query_init_local_max_and_xy_layout():
    head = tiny_head(num_proposals=4).eval()
    logits = torch.full((1, 10, 32, 32), -10.0)
    logits[0, 0, 5, 7] = 5.0  # car peak; its neighbour is suppressed by the 3x3 local max
    logits[0, 0, 5, 8] = 4.0
    logits[0, 8, 20, 10] = 3.0  # two adjacent pedestrians both survive (kernel 1 for class 8)
    logits[0, 8, 20, 11] = 2.9
    logits[0, 3, 0, 3] = 6.0  # a border cell is never a local max for 3x3 classes
    head.heatmap_head.forward = lambda _x: logits
    with torch.no_grad():
        for name in ("center", "height", "dim", "rot", "vel"):  # zero regression: boxes sit at query cells
            last = getattr(head.prediction_heads[0], name)[-1]
            last.weight.zero_()
            last.bias.zero_()
        head.prediction_heads[0].rot[-1].bias.copy_(torch.tensor([0.0, 1.0]))  # yaw 0
        head.prediction_heads[0].heatmap[-1].weight.zero_()  # class logits 0: sigmoid 0.5
        head.prediction_heads[0].heatmap[-1].bias.zero_()
        preds = head(torch.randn(1, 32, 32, 32))
        out = head.get_bboxes(preds)[0]
    assert preds["query_labels"][0].tolist()[:3] == [0, 8, 8]
    pos = preds["center"][0, :, :3].T.tolist()
    assert pos == [[5.5, 7.5], [20.5, 10.5], [20.5, 11.5]]
    # Cell (5, 7) of a [X, Y] map at 1 m from -16 m: x = -10.5, y = -8.5.
    top = out["boxes_3d"][out["scores_3d"].argmax()]
    assert top[:2].tolist() == pytest.approx([-10.5, -8.5])
    assert top[3:6].tolist() == pytest.approx([1.0, 1.0, 1.0]) and top[6].item() == pytest.approx(0.0)
    assert out["labels_3d"].dtype == torch.long and out["boxes_3d"].shape[1] == 9
    # score = sigmoid(class logit) x query heatmap score
    expect = 0.5 * torch.sigmoid(torch.tensor(5.0))
    assert out["scores_3d"].max().item() == pytest.approx(expect.item(), rel=1e-4)


# ---------------------------------------------------------------------------------------------------- losses


def test_loss_primitives():
    pred = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    target = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    # pos: -log(0.9) * 0.1^2; neg (0,1): -log(0.9) * 0.01 * 1; (1,0): -log(0.5) * 0.25 * 0.5^4; (1,1): -log(.5) * .25
    expect = -math.log(0.9) * 0.01 * 2 + (-math.log(0.5) * 0.25) * (0.0625 + 1)
    assert gaussian_focal_loss(pred, target, avg_factor=1).item() == pytest.approx(expect, rel=1e-5)
    logits = torch.zeros(2, 3)
    # Background label (3) is an all-zero one-hot; every element then costs 0.75 * 0.5^2 * log 2.
    loss = sigmoid_focal_loss(logits, torch.tensor([3, 3]), torch.ones(2), avg_factor=1)
    assert loss.item() == pytest.approx(6 * 0.75 * 0.25 * math.log(2), rel=1e-5)


def test_loss_keys_grad_and_empty_gt():
    head = tiny_head().train()
    x = torch.randn(2, 32, 32, 32, requires_grad=True)
    preds = head(x)
    gt = [torch.tensor([[5.3, -4.2, 0.5, 4.5, 1.9, 1.6, 0.3, 1.0, 0.0]]), torch.zeros(0, 9)]
    losses = head.loss(preds, gt, [torch.tensor([0]), torch.zeros(0, dtype=torch.long)])
    assert set(losses) == {"loss_heatmap", "layer_-1_loss_cls", "layer_-1_loss_bbox", "matched_ious"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert not losses["matched_ious"].requires_grad
    sum(v for k, v in losses.items() if k.startswith(("loss", "layer"))).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_autocast_bf16_losses_are_fp32_and_finite():
    head = tiny_head().train()
    x = torch.randn(1, 32, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds = head(x)
        losses = head.loss(preds, [torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.2, 0.0, 0.0]])], [torch.tensor([2])])
        seg = BEVSegmentationHead(BEVSegHeadConfig(in_channels=32, input_scope=((-16, 16, 1),) * 2,
                                                   output_scope=((-16, 16, 0.5),) * 2))
        seg_losses = seg(x, (torch.rand(1, 6, 64, 64) > 0.5).float())
    for v in [*losses.values(), *seg_losses.values()]:
        assert v.dtype == torch.float32 and torch.isfinite(v)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = head.eval().get_bboxes(head(x))
    assert out[0]["boxes_3d"].dtype == torch.float32


def test_half_precision_model_keeps_fp32_positions_and_losses():
    head = tiny_head().to(torch.bfloat16).train()
    x = torch.randn(1, 32, 32, 32, dtype=torch.bfloat16)
    preds = head(x)
    assert preds["center"].dtype == torch.float32  # cell position + predicted offset, not rounded to bf16
    losses = head.loss(preds, [torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.2, 0.0, 0.0]])], [torch.tensor([2])])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(v for k, v in losses.items() if k != "matched_ious").backward()
    assert head.shared_conv.weight.grad.dtype == torch.bfloat16


def test_overfit_toy_scene_losses_decrease_and_boxes_land_on_gt():
    head = tiny_head()
    torch.manual_seed(1)
    x = torch.randn(2, 32, 32, 32)
    gts = [torch.tensor([[5.3, -4.2, 0.5, 4.5, 1.9, 1.6, 0.3, 1.0, 0.0],
                         [-8.1, 7.6, 0.0, 0.8, 0.6, 1.7, 1.0, 0.0, 0.0]]),
           torch.tensor([[0.7, 10.2, 0.8, 10.0, 2.8, 3.0, -1.2, 0.0, 2.0]])]
    labels = [torch.tensor([0, 8]), torch.tensor([3])]
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=0.01)
    history = []
    head.train()
    for _ in range(40):
        losses = head.loss(head(x), gts, labels)
        total = sum(v for k, v in losses.items() if k != "matched_ious")
        assert torch.isfinite(total)
        history.append({k: v.item() for k, v in losses.items()})
        opt.zero_grad()
        total.backward()
        opt.step()
    first, last = history[0], history[-1]
    for key in ("loss_heatmap", "layer_-1_loss_cls", "layer_-1_loss_bbox"):
        assert last[key] < 0.6 * first[key], (key, first[key], last[key])
    assert last["matched_ious"] > 0.4 > first["matched_ious"]

    head.eval()
    with torch.no_grad():
        out = head.get_bboxes(head(x))
    for o, g, lb in zip(out, gts, labels):
        for box, label in zip(g, lb):
            mine = o["labels_3d"] == label
            assert mine.any()
            best = o["boxes_3d"][mine][o["scores_3d"][mine].argmax()]
            assert torch.dist(best[:2], box[:2]).item() < 1.0, (best, box)
            assert (best[3:6] / box[3:6]).log().abs().max().item() < 0.5


# ---------------------------------------------------------------------------------------------------- map head


def test_grid_transform_layout_is_x_then_y():
    cfg = BEVSegHeadConfig(in_channels=2, input_scope=((-4, 4, 1),) * 2, output_scope=((-4, 4, 1), (-2, 2, 1)))
    head = BEVSegmentationHead(cfg)
    xs = torch.arange(8.0)
    x = torch.stack([xs[:, None].expand(8, 8), xs[None, :].expand(8, 8)])[None]  # ch0 = x index, ch1 = y index
    out = head.transform(x)
    assert out.shape == (1, 2, 8, 4)
    assert torch.allclose(out[0, 0], xs[:, None].expand(8, 4))  # same cells along x
    assert torch.allclose(out[0, 1], torch.arange(2.0, 6.0)[None].expand(8, 4))  # y in [-2, 2] = cells 2..5


def test_map_losses_on_known_masks():
    cfg = BEVSegHeadConfig(in_channels=4, input_scope=((-8, 8, 1),) * 2, output_scope=((-8, 8, 0.5),) * 2)
    head = BEVSegmentationHead(cfg)
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 6, 32, 32, generator=gen) > 0.7).float()
    target[:, 3] = 0  # an absent class
    perfect = head.loss((target * 2 - 1) * 30, target)
    assert set(perfect) == {f"{c}/{t}" for c in cfg.classes for t in ("focal", "dice")}
    assert all(v.item() < 1e-6 for v in perfect.values())
    wrong = head.loss((1 - 2 * target) * 30, target)
    assert wrong["drivable_area/dice"].item() > 0.99 and wrong["drivable_area/focal"].item() > 5
    half = head.loss(torch.zeros_like(target), target)
    t = target[:, 0]
    dice = 1 - (2 * 0.5 * t.sum() + 1) / (0.5 * t.numel() + t.sum() + 1)
    assert half["drivable_area/dice"].item() == pytest.approx(dice.item(), rel=1e-5)
    assert half["drivable_area/focal"].item() == pytest.approx(0.25 * math.log(2), rel=1e-5)


def test_map_head_forward_train_and_eval():
    cfg = BEVSegHeadConfig(in_channels=8, input_scope=((-16, 16, 1),) * 2, output_scope=((-15, 15, 0.5),) * 2)
    head = BEVSegmentationHead(cfg)
    x = torch.randn(2, 8, 32, 32)
    losses = head(x, torch.zeros(2, 6, 60, 60))
    assert len(losses) == 12 and all(v.requires_grad for v in losses.values())
    head.eval()
    probs = head(x)
    assert probs.shape == (2, 6, 60, 60) and probs.min() >= 0 and probs.max() <= 1
    with pytest.raises(ValueError, match="map target"):
        head.train()(x, torch.zeros(2, 6, 50, 50))


@pytest.mark.parametrize("kw, keys", [
    (dict(num_decoder_layers=2), {"layer_0_loss_cls", "layer_0_loss_bbox", "layer_-1_loss_cls", "layer_-1_loss_bbox"}),
    (dict(num_decoder_layers=2, auxiliary=False), {"layer_-1_loss_cls", "layer_-1_loss_bbox"}),
    (dict(nms_kernel_size=1), {"layer_-1_loss_cls", "layer_-1_loss_bbox"}),
])
def test_decoder_layer_variants(kw, keys):
    head = tiny_head(**kw).train()
    preds = head(torch.randn(2, 32, 32, 32))
    losses = head.loss(preds, [torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.2, 0.0, 0.0]]), torch.zeros(0, 9)],
                       [torch.tensor([2]), torch.zeros(0, dtype=torch.long)])
    assert set(losses) == keys | {"loss_heatmap", "matched_ious"}
    head.eval()
    with torch.no_grad():
        assert head.get_bboxes(head(torch.randn(1, 32, 32, 32)))[0]["boxes_3d"].shape == (20, 9)
