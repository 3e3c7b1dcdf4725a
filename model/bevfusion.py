"""BEVFusion with task-specific GCA.

    camera: Swin-T -> GeneralizedLSSFPN -> (Depth)LSSTransform ---\
                                                                   ConvFuser -> SECOND -> SECONDFPN -> [GCA] -> heads
    LiDAR:  Voxelization -> SparseEncoder ------------------------/

Attribute paths equal the original's (`encoders.camera.backbone`, `fuser`, `decoder.neck`, `heads.object`, ...) so
state_dict keys of BEVFusion checkpoints load by name; the GCA gates are the only new modules (`task_gca.*`).
"""

from __future__ import annotations

import torch
from torch import nn

from model.camera.fpn import GeneralizedLSSFPN
from model.camera.swin import SwinTransformer
from model.camera.vtransform import DepthLSSTransform, LSSTransform
from model.config import ModelConfig
from model.decoder import SECOND, SECONDFPN
from model.fuser import ConvFuser
from model.gca import build_task_gca
from model.heads import BEVSegmentationHead, TransFusionHead
from model.lidar.sparse_encoder import SparseEncoder
from model.lidar.voxelize import Voxelization

VTRANSFORMS = {"DepthLSSTransform": DepthLSSTransform, "LSSTransform": LSSTransform}


class BEVFusion(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        cam, lid = cfg.camera, cfg.lidar
        vt = cam.vtransform
        self.encoders = nn.ModuleDict({
            "camera": nn.ModuleDict({
                "backbone": SwinTransformer(**vars(cam.backbone)),
                "neck": GeneralizedLSSFPN(cam.neck.in_channels, cam.neck.out_channels),
                "vtransform": VTRANSFORMS[vt.type](vt.in_channels, vt.out_channels, cfg.image_size, cfg.feature_size,
                                                   vt.xbound, vt.ybound, vt.zbound, vt.dbound, vt.downsample),
            }),
            "lidar": nn.ModuleDict({
                "voxelize": Voxelization(cfg.voxel_size, cfg.point_cloud_range, lid.voxelize.max_num_points,
                                         lid.voxelize.max_voxels),
                "backbone": SparseEncoder(sparse_shape=cfg.sparse_shape, **vars(lid.backbone)),
            }),
        })
        lidar_ch = cfg.lidar_bev_channels
        self.fuser = ConvFuser((vt.out_channels, lidar_ch), cfg.fuser.out_channels)
        dec = cfg.decoder
        self.decoder = nn.ModuleDict({
            "backbone": SECOND(cfg.fuser.out_channels, dec.backbone.out_channels, dec.backbone.layer_nums,
                               dec.backbone.layer_strides),
            "neck": SECONDFPN(dec.backbone.out_channels, dec.neck.out_channels, dec.neck.upsample_strides),
        })
        gca = build_task_gca(cfg.gca.mode, cfg.heads, cfg.decoder_channels, cfg.gca.reduction)
        if gca is not None:
            self.task_gca = gca
        heads = {}
        if "object" in cfg.heads:
            heads["object"] = TransFusionHead(cfg.object_head)
            heads["object"].bbox_coder.convention = getattr(cfg, "box_convention", "mmdet3d")
        if "map" in cfg.heads:
            heads["map"] = BEVSegmentationHead(cfg.map_head)
        self.heads = nn.ModuleDict(heads)

    # ------------------------------------------------------------------------------------------------ parts
    def gca_params(self) -> dict[str, int]:
        """Parameters per GCA gate ({} without GCA), e.g. {'object': 131072, 'map': 131072}."""
        gca = getattr(self, "task_gca", None)
        if gca is None:
            return {}
        return {name: sum(p.numel() for p in m.parameters()) for name, m in gca.items()}

    def extract_camera_features(self, batch: dict) -> torch.Tensor:
        img = batch["img"]
        B, N, C, H, W = img.shape
        cam = self.encoders["camera"]
        x = cam["backbone"](img.view(B * N, C, H, W))
        x = cam["neck"](x)[0]
        x = x.view(B, N, *x.shape[1:])
        return cam["vtransform"](
            x, batch["points"], camera_intrinsics=batch["camera_intrinsics"], camera2lidar=batch["camera2lidar"],
            lidar2image=batch["lidar2image"], img_aug_matrix=batch["img_aug_matrix"],
            lidar_aug_matrix=batch["lidar_aug_matrix"])

    def extract_lidar_features(self, points: list[torch.Tensor]) -> torch.Tensor:
        lid = self.encoders["lidar"]
        feats, coords, batch_size = lid["voxelize"](points)
        return lid["backbone"](feats, coords, batch_size)

    def bev_features(self, batch: dict) -> torch.Tensor:
        """Shared BEV features after the decoder, [B, 512, X, Y] at full size."""
        # LiDAR first: its voxel buffers are freed before the camera's large frustum tensors are built
        lidar = self.extract_lidar_features(batch["points"])
        camera = self.extract_camera_features(batch)
        x = self.fuser([camera, lidar])
        x = self.decoder["backbone"](x)
        return self.decoder["neck"](x)[0]

    def head_input(self, x: torch.Tensor, head: str) -> torch.Tensor:
        gca = getattr(self, "task_gca", None)
        if gca is None:
            return x
        return gca["shared"](x) if "shared" in gca else gca[head](x)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, batch: dict):
        x = self.bev_features(batch)
        if self.training:
            out: dict[str, torch.Tensor] = {}
            if "object" in self.heads:
                head = self.heads["object"]
                preds = head(self.head_input(x, "object"))
                for k, v in head.loss(preds, batch["gt_boxes"], batch["gt_labels"]).items():
                    kind = "loss" if "loss" in k else "stats"
                    out[f"{kind}/object/{k}"] = v
            if "map" in self.heads:
                losses = self.heads["map"](self.head_input(x, "map"), batch["gt_masks_bev"])
                for k, v in losses.items():
                    out[f"loss/map/{k}"] = v
            return out
        results = [dict() for _ in range(x.shape[0])]
        if "object" in self.heads:
            head = self.heads["object"]
            for r, boxes in zip(results, head.get_bboxes(head(self.head_input(x, "object")))):
                r.update(boxes)
        if "map" in self.heads:
            masks = self.heads["map"](self.head_input(x, "map"))
            for r, m in zip(results, masks):
                r["masks_bev"] = m
        return results


def total_loss(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the `loss/...` entries (the `stats/...` ones are for logging)."""
    return sum(v for k, v in outputs.items() if k.startswith("loss/"))


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> BEVFusion:
    """Build on `device`; "meta" allocates nothing (for key/shape listings of the full model)."""
    with torch.device(device):
        return BEVFusion(cfg)
