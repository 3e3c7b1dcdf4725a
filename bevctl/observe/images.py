"""The BEV map image logged at each evaluation: the first validation sample's predicted map classes beside its
ground truth, each class in its colour (a cell takes the colour of the last class whose probability is >= 0.5).
numpy is imported when called: only the trainer calls this."""

from __future__ import annotations

from typing import Any, Sequence

# drivable_area, ped_crossing, walkway, stop_line, carpark_area, divider (BEVFusion's order), then spares
PALETTE = ((166, 206, 227), (251, 154, 153), (178, 223, 138), (227, 26, 28), (253, 191, 111), (31, 120, 180),
           (202, 178, 214), (106, 61, 154))
BACKGROUND = (24, 24, 24)
GAP = 4
MIN_SIDE = 200


def _colour(masks: Any, np: Any) -> Any:
    masks = np.asarray(masks, dtype=np.float32)  # [C, X, Y]
    _, nx, ny = masks.shape
    image = np.empty((nx, ny, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for c in range(masks.shape[0]):
        image[masks[c] >= 0.5] = PALETTE[c % len(PALETTE)]
    # dim -2 indexes x (forward): draw x upward, y to the left, as seen from above with the ego car facing up
    image = image[::-1, ::-1]
    scale = max(1, MIN_SIDE // max(nx, ny))  # small maps (the demo's 50 x 50) are enlarged, cell by cell
    return image.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else image


def bev_maps_image(pred: Any, gt: Any | None = None, classes: Sequence[str] = ()) -> Any:
    """H x W x 3 uint8: prediction | ground truth (when given) for masks of shape [C, X, Y]."""
    import numpy as np

    left = _colour(pred, np)
    if gt is None:
        return np.ascontiguousarray(left)
    right = _colour(gt, np)
    gap = np.full((left.shape[0], GAP, 3), 255, dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate([left, gap, right], axis=1))
