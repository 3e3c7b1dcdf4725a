"""BEVFusion's task heads: `heads.object` (TransFusionHead) and `heads.map` (BEVSegmentationHead)."""

from .bev_seg import MAP_CLASSES, BEVGridTransform, BEVSegHeadConfig, BEVSegmentationHead
from .transfusion import TransFusionHead, TransFusionHeadConfig

__all__ = [
    "MAP_CLASSES",
    "BEVGridTransform",
    "BEVSegHeadConfig",
    "BEVSegmentationHead",
    "TransFusionHead",
    "TransFusionHeadConfig",
]
