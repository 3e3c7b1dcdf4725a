"""TransFusionHead: BEVFusion's 3D object detection head (`heads.object`).

A dense class heatmap picks the top-`num_proposals` local maxima as object queries (BEV feature at the cell +
an encoding of the class); one transformer decoder layer refines them against the whole BEV feature map; small
1x1-conv heads regress boxes per query. Training matches queries to ground truth one-to-one (Hungarian).
Module attribute names mirror the original so `state_dict` keys match `heads.object.*` checkpoints.

Layouts: BEV input `[B, C, X, Y]` (dim -2 indexes x); query positions are `(x, y)` in feature cells, cell
centres at `index + 0.5`; boxes `(x, y, z centre, l, w, h, yaw, vx, vy)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .assigner import BBoxBEVL1Cost, FocalLossCost, HungarianAssigner3D, IoU3DCost
from .box_coder import TransFusionBBoxCoder
from .losses import (clip_sigmoid, gaussian_focal_loss, gaussian_heatmap, gaussian_radius, sigmoid_focal_loss,
                     weighted_l1_loss)


@dataclass
class TransFusionHeadConfig:
    """Defaults = the original det config (`configs/nuscenes/det/transfusion/...`), model + train/test cfg."""

    in_channels: int = 512
    hidden_channel: int = 128
    num_classes: int = 10
    num_proposals: int = 200
    num_decoder_layers: int = 1
    num_heads: int = 8
    ffn_channel: int = 256
    dropout: float = 0.1
    bn_momentum: float = 0.1
    activation: str = "relu"
    nms_kernel_size: int = 3
    auxiliary: bool = True
    head_conv: int = 64
    # name -> (output channels, number of convs); the class `heatmap` head is appended after these.
    common_heads: dict = field(default_factory=lambda: {
        "center": (2, 2), "height": (1, 2), "dim": (3, 2), "rot": (2, 2), "vel": (2, 2)})
    num_heatmap_convs: int = 2
    # Classes whose query-init local maximum uses kernel 1 (nuScenes pedestrian, traffic_cone): they are small
    # and crowded, so a 3x3 suppression would drop true neighbours.
    small_object_classes: tuple = (8, 9)
    # Geometry (bbox_coder / train_cfg / test_cfg).
    point_cloud_range: tuple = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)
    voxel_size: tuple = (0.075, 0.075, 0.2)
    out_size_factor: int = 8
    post_center_range: tuple = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    score_threshold: float | None = 0.0
    code_size: int = 10
    # Targets and losses (train_cfg + loss_* of the original).
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    pos_weight: float = -1.0
    code_weights: tuple = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2)
    cls_cost_weight: float = 0.15
    reg_cost_weight: float = 0.25
    iou_cost_weight: float = 0.25
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    loss_cls_weight: float = 1.0
    loss_bbox_weight: float = 0.25
    loss_heatmap_weight: float = 1.0

    @property
    def grid_size(self) -> tuple[int, int]:
        """BEV feature map size (X, Y) the head expects: point-cloud extent / (voxel * out_size_factor)."""
        pc, vs, f = self.point_cloud_range, self.voxel_size, self.out_size_factor
        return (round((pc[3] - pc[0]) / vs[0] / f), round((pc[4] - pc[1]) / vs[1] / f))


class ConvModule(nn.Module):
    """conv -> BN -> ReLU with mmcv's attribute names (`conv`, `bn`); the conv has no bias (BN follows)."""

    def __init__(self, conv: nn.Module, bn: nn.Module):
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class PositionEmbeddingLearned(nn.Module):
    """Learned embedding of (x, y) cell positions: [B, P, 2] -> [B, C, P]."""

    def __init__(self, input_channel: int, num_pos_feats: int):
        super().__init__()
        self.position_embedding_head = nn.Sequential(
            nn.Conv1d(input_channel, num_pos_feats, kernel_size=1),
            nn.BatchNorm1d(num_pos_feats),
            nn.ReLU(inplace=True),
            nn.Conv1d(num_pos_feats, num_pos_feats, kernel_size=1),
        )

    def forward(self, xyz: Tensor) -> Tensor:
        xyz = xyz.transpose(1, 2).contiguous()
        weight = self.position_embedding_head[0].weight
        device_type = xyz.device.type
        if weight.dtype == torch.float32 and device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
            # Positions are raw cell coordinates (up to 180): bf16 would round them to whole cells, so the
            # embedding (cheap: 2 -> C -> C per position) stays in float32 under autocast.
            with torch.autocast(device_type, enabled=False):
                return self.position_embedding_head(xyz.float())
        return self.position_embedding_head(xyz.to(weight.dtype))


class TransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention among queries, cross-attention to the BEV map, FFN.

    Positional embeddings are added to queries/keys (and, as in the original, to the cross-attention values).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, activation: str,
                 self_posembed: nn.Module, cross_posembed: nn.Module):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = {"relu": F.relu, "gelu": F.gelu}[activation]
        self.self_posembed = self_posembed
        self.cross_posembed = cross_posembed

    def forward(self, query: Tensor, key: Tensor, query_pos: Tensor, key_pos: Tensor) -> Tensor:
        """query [B, C, P], key [B, C, N], query_pos [B, P, 2], key_pos [B, N, 2] -> [B, C, P]."""
        q_pe = self.self_posembed(query_pos).transpose(1, 2)
        k_pe = self.cross_posembed(key_pos).transpose(1, 2)
        query = query.transpose(1, 2)
        key = key.transpose(1, 2) + k_pe
        q = query + q_pe
        query = self.norm1(query + self.dropout1(self.self_attn(q, q, q, need_weights=False)[0]))
        attn = self.multihead_attn(query + q_pe, key, key, need_weights=False)[0]
        query = self.norm2(query + self.dropout2(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(query))))
        query = self.norm3(query + self.dropout3(ffn))
        return query.transpose(1, 2)


class FFN(nn.Module):
    """Per-query prediction heads, one attribute per output (`center`, ..., `heatmap`), 1x1 Conv1d stacks."""

    def __init__(self, in_channels: int, heads: dict, head_conv: int):
        super().__init__()
        self.heads = dict(heads)
        for name, (out_channels, num_conv) in self.heads.items():
            layers: list[nn.Module] = []
            c_in = in_channels
            for _ in range(num_conv - 1):
                layers.append(ConvModule(nn.Conv1d(c_in, head_conv, 1, bias=False), nn.BatchNorm1d(head_conv)))
                c_in = head_conv
            layers.append(nn.Conv1d(c_in, out_channels, 1, bias=True))
            setattr(self, name, nn.Sequential(*layers))
        # The original's FFN has an `init_weights` filling the class bias with -2.19, but nothing ever calls it
        # (BEVFusion.init_weights only initialises the camera backbone), so released models trained from
        # PyTorch's default init; we keep that behaviour.

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {name: getattr(self, name)(x) for name in self.heads}


class TransFusionHead(nn.Module):
    def __init__(self, cfg: TransFusionHeadConfig | None = None):
        super().__init__()
        cfg = cfg or TransFusionHeadConfig()
        self.cfg = cfg
        hidden = cfg.hidden_channel
        self.num_classes = cfg.num_classes
        self.num_proposals = cfg.num_proposals

        self.shared_conv = nn.Conv2d(cfg.in_channels, hidden, kernel_size=3, padding=1, bias=True)
        self.heatmap_head = nn.Sequential(
            ConvModule(nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden)),
            nn.Conv2d(hidden, cfg.num_classes, 3, padding=1, bias=True),
        )
        self.class_encoding = nn.Conv1d(cfg.num_classes, hidden, 1)
        self.decoder = nn.ModuleList([
            TransformerDecoderLayer(hidden, cfg.num_heads, cfg.ffn_channel, cfg.dropout, cfg.activation,
                                    self_posembed=PositionEmbeddingLearned(2, hidden),
                                    cross_posembed=PositionEmbeddingLearned(2, hidden))
            for _ in range(cfg.num_decoder_layers)
        ])
        heads = {k: tuple(v) for k, v in cfg.common_heads.items()}
        heads["heatmap"] = (cfg.num_classes, cfg.num_heatmap_convs)
        self.prediction_heads = nn.ModuleList([FFN(hidden, heads, cfg.head_conv)
                                               for _ in range(cfg.num_decoder_layers)])
        self._init_weights()

        # A plain attribute, not a buffer: it is derived from the config, so checkpoints must not carry it. Built
        # on the CPU explicitly so a meta-device model still has real positions; moved lazily in forward.
        self.bev_pos = self._create_2d_grid(*cfg.grid_size)
        self.bbox_coder = TransFusionBBoxCoder(cfg.point_cloud_range, cfg.out_size_factor, cfg.voxel_size,
                                               cfg.post_center_range, cfg.score_threshold, cfg.code_size)
        self.assigner = HungarianAssigner3D(
            FocalLossCost(cfg.cls_cost_weight, cfg.focal_alpha, cfg.focal_gamma),
            BBoxBEVL1Cost(cfg.reg_cost_weight), IoU3DCost(cfg.iou_cost_weight))

    def _init_weights(self) -> None:
        for p in self.decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.momentum = self.cfg.bn_momentum

    @staticmethod
    def _create_2d_grid(size_x: int, size_y: int) -> Tensor:
        """[1, X*Y, 2] (x, y) cell centres, flattened x-major like `feat.flatten(2)` of a [B, C, X, Y] map."""
        xs = torch.arange(size_x, dtype=torch.float32, device="cpu") + 0.5
        ys = torch.arange(size_y, dtype=torch.float32, device="cpu") + 0.5
        gx, gy = torch.meshgrid(xs, ys, indexing="ij")
        return torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x [B, in_channels, X, Y] -> preds: `center` [B, 2, L*P], `height`, `dim`, `rot`, `vel`, `heatmap`
        (class logits) [B, C, L*P] (L = decoder layers kept), `query_heatmap_score` [B, C, P],
        `dense_heatmap` [B, C, X, Y] (logits), `query_labels` [B, P]."""
        cfg = self.cfg
        batch = x.shape[0]
        feat = self.shared_conv(x)
        if tuple(feat.shape[-2:]) != tuple(cfg.grid_size):
            raise ValueError(f"TransFusionHead expects a {cfg.grid_size} BEV map (point_cloud_range / voxel_size / "
                             f"out_size_factor), got {tuple(feat.shape[-2:])}")
        feat_flat = feat.flatten(2)  # [B, C, N]
        if self.bev_pos.device != x.device:
            self.bev_pos = self.bev_pos.to(x.device)
        # float32 even for a half-precision model: query positions (and so box centres) keep sub-cell precision.
        bev_pos = self.bev_pos.expand(batch, -1, -1)

        dense_heatmap = self.heatmap_head(feat)
        heatmap = dense_heatmap.detach().sigmoid()
        # Query init: keep only local maxima (3x3; border cells are never maxima, as in the original's padding).
        k = cfg.nms_kernel_size
        if k > 1:
            pad = k // 2
            local_max = torch.zeros_like(heatmap)
            local_max[:, :, pad:-pad, pad:-pad] = F.max_pool2d(heatmap, kernel_size=k, stride=1, padding=0)
            for c in cfg.small_object_classes:
                if c < self.num_classes:
                    local_max[:, c] = heatmap[:, c]
            heatmap = heatmap * (heatmap == local_max)
        heatmap = heatmap.flatten(2)  # [B, C, N]
        num_cells = heatmap.shape[-1]
        top = heatmap.reshape(batch, -1).topk(self.num_proposals, dim=-1).indices
        query_labels = torch.div(top, num_cells, rounding_mode="floor")
        query_index = top % num_cells

        query_feat = feat_flat.gather(-1, query_index[:, None, :].expand(-1, feat_flat.shape[1], -1))
        one_hot = F.one_hot(query_labels, self.num_classes).permute(0, 2, 1).to(self.class_encoding.weight.dtype)
        query_feat = query_feat + self.class_encoding(one_hot)
        query_pos = bev_pos.gather(1, query_index[:, :, None].expand(-1, -1, 2))

        layers_out = []
        for layer, pred_head in zip(self.decoder, self.prediction_heads):
            query_feat = layer(query_feat, feat_flat, query_pos, bev_pos)
            res = pred_head(query_feat)
            # The head predicts the centre as an offset (in cells) from the query's position.
            res["center"] = res["center"] + query_pos.transpose(1, 2)
            layers_out.append(res)
            query_pos = res["center"].detach().transpose(1, 2)

        if not cfg.auxiliary:
            layers_out = layers_out[-1:]
        preds = {key: torch.cat([r[key] for r in layers_out], dim=-1) for key in layers_out[0]}
        preds["query_heatmap_score"] = heatmap.gather(-1, query_index[:, None, :].expand(-1, self.num_classes, -1))
        preds["dense_heatmap"] = dense_heatmap
        preds["query_labels"] = query_labels
        return preds

    # ------------------------------------------------------------------------------------------------ targets
    def _heatmap_target(self, gt_boxes: Tensor, gt_labels: Tensor, device: torch.device) -> Tensor:
        """Dense [C, X, Y] Gaussian targets; float32 arithmetic and truncation toward zero like the original."""
        cfg = self.cfg
        size_x, size_y = cfg.grid_size
        boxes = gt_boxes.to(device=device, dtype=torch.float32)
        vx, vy, f = float(cfg.voxel_size[0]), float(cfg.voxel_size[1]), cfg.out_size_factor
        length, width = boxes[:, 3] / vx / f, boxes[:, 4] / vy / f
        keep = (length > 0) & (width > 0)
        boxes, length, width = boxes[keep], length[keep], width[keep]
        radius = gaussian_radius(width, length, cfg.gaussian_overlap).to(torch.int64).clamp(min=cfg.min_radius)
        cx = ((boxes[:, 0] - cfg.point_cloud_range[0]) / vx / f).to(torch.int64)
        cy = ((boxes[:, 1] - cfg.point_cloud_range[1]) / vy / f).to(torch.int64)
        return gaussian_heatmap((self.num_classes, size_x, size_y), gt_labels.to(device)[keep].long(), cx, cy, radius)

    def _targets_single(self, preds: dict[str, Tensor], b: int, gt_boxes: Tensor, gt_labels: Tensor):
        """Assign this sample's queries (every kept decoder layer separately) and build their targets."""
        cfg = self.cfg
        logits = preds["heatmap"][b:b + 1].detach()
        total = logits.shape[-1]
        decoded = self.bbox_coder.decode(
            logits, preds["rot"][b:b + 1].detach(), preds["dim"][b:b + 1].detach(),
            preds["center"][b:b + 1].detach(), preds["height"][b:b + 1].detach(),
            preds["vel"][b:b + 1].detach() if "vel" in preds else None)[0]["bboxes"]
        gt_boxes = gt_boxes.to(decoded.device).float()
        gt_labels = gt_labels.to(decoded.device).long()

        assigned, overlaps = [], []
        for start in range(0, total, self.num_proposals):
            sl = slice(start, start + self.num_proposals)
            res = self.assigner.assign(decoded[sl], gt_boxes, gt_labels, logits[0, :, sl].t(), cfg.point_cloud_range)
            assigned.append(res.assigned_gt_inds)
            overlaps.append(res.max_overlaps)
        assigned_t = torch.cat(assigned)
        ious = torch.cat(overlaps).clamp(0, 1)
        pos = torch.nonzero(assigned_t > 0).squeeze(1)

        labels = torch.full((total,), self.num_classes, dtype=torch.long, device=decoded.device)
        label_weights = torch.ones(total, device=decoded.device)  # every query is either positive or negative
        bbox_targets = decoded.new_zeros((total, cfg.code_size))
        bbox_weights = decoded.new_zeros((total, cfg.code_size))
        if pos.numel() > 0:
            matched = assigned_t[pos] - 1
            bbox_targets[pos] = self.bbox_coder.encode(gt_boxes[matched])
            bbox_weights[pos] = 1.0
            labels[pos] = gt_labels[matched]
            if cfg.pos_weight > 0:
                label_weights[pos] = cfg.pos_weight
        mean_iou = float(ious[pos].sum() / max(pos.numel(), 1))
        heatmap = self._heatmap_target(gt_boxes, gt_labels, decoded.device)
        return labels, label_weights, bbox_targets, bbox_weights, int(pos.numel()), mean_iou, heatmap

    # ------------------------------------------------------------------------------------------------ loss
    def loss(self, preds: dict[str, Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]) -> dict[str, Tensor]:
        cfg = self.cfg
        per_sample = [self._targets_single(preds, b, gt_boxes[b], gt_labels[b]) for b in range(len(gt_boxes))]
        labels, label_weights, bbox_targets, bbox_weights, num_pos, mean_ious, heatmap = zip(*per_sample)
        labels, label_weights = torch.stack(labels), torch.stack(label_weights)
        bbox_targets, bbox_weights = torch.stack(bbox_targets), torch.stack(bbox_weights)
        heatmap = torch.stack(heatmap)
        num_pos = sum(num_pos)
        matched_ious = sum(mean_ious) / max(len(mean_ious), 1)

        losses: dict[str, Tensor] = {}
        losses["loss_heatmap"] = gaussian_focal_loss(
            clip_sigmoid(preds["dense_heatmap"]), heatmap, avg_factor=max(float(heatmap.eq(1).sum()), 1.0),
            weight=cfg.loss_heatmap_weight)

        total = preds["heatmap"].shape[-1]
        num_layers = total // self.num_proposals
        reg_names = [n for n in ("center", "height", "dim", "rot", "vel") if n in preds]
        code_weights = torch.tensor(cfg.code_weights, dtype=torch.float32, device=bbox_weights.device)
        avg = max(float(num_pos), 1.0)
        for i in range(num_layers):
            prefix = "layer_-1" if i == num_layers - 1 else f"layer_{i}"
            sl = slice(i * self.num_proposals, (i + 1) * self.num_proposals)
            cls_logits = preds["heatmap"][..., sl].permute(0, 2, 1).reshape(-1, self.num_classes)
            losses[f"{prefix}_loss_cls"] = sigmoid_focal_loss(
                cls_logits, labels[:, sl].reshape(-1), label_weights[:, sl].reshape(-1), avg_factor=avg,
                gamma=cfg.focal_gamma, alpha=cfg.focal_alpha, weight=cfg.loss_cls_weight)
            box_preds = torch.cat([preds[n][..., sl] for n in reg_names], dim=1).permute(0, 2, 1)
            losses[f"{prefix}_loss_bbox"] = weighted_l1_loss(
                box_preds, bbox_targets[:, sl], bbox_weights[:, sl] * code_weights, avg_factor=avg,
                weight=cfg.loss_bbox_weight)
        losses["matched_ious"] = torch.tensor(matched_ious, dtype=torch.float32, device=heatmap.device)
        return losses

    # ------------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def get_bboxes(self, preds: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """No NMS (as the nuScenes test_cfg): every query inside `post_center_range` (above `score_threshold` if set),
        score = sigmoid(class logit) x heatmap score of the query's cell, for the query's init class."""
        p = self.num_proposals
        one_hot = F.one_hot(preds["query_labels"], self.num_classes).permute(0, 2, 1).float()
        score = preds["heatmap"][..., -p:].float().sigmoid() * preds["query_heatmap_score"].float() * one_hot
        decoded = self.bbox_coder.decode(
            score, preds["rot"][..., -p:], preds["dim"][..., -p:], preds["center"][..., -p:],
            preds["height"][..., -p:], preds["vel"][..., -p:] if "vel" in preds else None, filter=True)
        return [{"boxes_3d": d["bboxes"], "scores_3d": d["scores"], "labels_3d": d["labels"].long()}
                for d in decoded]
