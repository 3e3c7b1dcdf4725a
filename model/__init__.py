"""BEVFusion (camera + LiDAR, BEV detection + map segmentation) with task-specific GCA, in torch + spconv.

Importing `model` applies the third-party shims in `model.shims` (spconv's CPU backward).
"""

from model import shims as _shims

_shims.apply()
