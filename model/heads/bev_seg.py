"""BEV map segmentation head (`heads.map`), "EnhancedBEVSeg": the original BEVSegmentationHead (grid_sample the
BEV feature onto the map grid, two Conv3x3-BN-ReLU, Conv1x1 to one logit per class, per-class sigmoid focal loss)
plus a per-class soft Dice loss, which counters the heavy foreground/background imbalance of thin classes
(stop_line, divider) that focal loss alone under-weights.

Layouts: input `[B, C, X, Y]` over `input_scope`; output / targets `[B, classes, Xm, Ym]` where `[c, i, j]` is the
cell at x = xmin + (i + .5) * res, y = ymin + (j + .5) * res of `output_scope`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import binary_focal_loss, soft_dice_loss

MAP_CLASSES = ("drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider")


@dataclass
class BEVSegHeadConfig:
    """Defaults: the bundled model's full size (512-ch 180x180 BEV over [-54, 54] m -> 200x200 map at 0.5 m)."""

    in_channels: int = 512
    classes: tuple = MAP_CLASSES
    # (min, max, step) per axis, x then y. Only min/max of the input scope matter (the map's extent).
    input_scope: tuple = ((-54.0, 54.0, 0.6), (-54.0, 54.0, 0.6))
    output_scope: tuple = ((-50.0, 50.0, 0.5), (-50.0, 50.0, 0.5))
    prescale_factor: float = 1.0
    loss: str = "focal"
    focal_gamma: float = 2.0
    focal_alpha: float = -1.0  # the original's map loss has no alpha
    dice_weight: float = 1.0  # 0 disables the Dice terms (plain original head)
    dice_smooth: float = 1.0

    @property
    def map_size(self) -> tuple[int, int]:
        return tuple(round((hi - lo) / step) for lo, hi, step in self.output_scope)  # type: ignore[return-value]


class BEVGridTransform(nn.Module):
    """Bilinearly resample a [B, C, X, Y] map over `input_scope` onto the cell centres of `output_scope`."""

    def __init__(self, input_scope, output_scope, prescale_factor: float = 1.0):
        super().__init__()
        self.input_scope = [tuple(map(float, s)) for s in input_scope]
        self.output_scope = [tuple(map(float, s)) for s in output_scope]
        self.prescale_factor = prescale_factor

    def forward(self, x: Tensor) -> Tensor:
        if self.prescale_factor != 1:
            x = F.interpolate(x, scale_factor=self.prescale_factor, mode="bilinear", align_corners=False)
        coords = []
        for (imin, imax, _), (omin, omax, ostep) in zip(self.input_scope, self.output_scope):
            n = round((omax - omin) / ostep)
            v = omin + ostep * (torch.arange(n, device=x.device, dtype=torch.float32) + 0.5)
            coords.append((v - imin) / (imax - imin) * 2 - 1)  # align_corners=False normalisation
        gx, gy = torch.meshgrid(coords[0], coords[1], indexing="ij")
        # grid_sample's last dim is (w, h) = (y, x) for a [B, C, X, Y] input.
        grid = torch.stack([gy, gx], dim=-1).to(x.dtype).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", align_corners=False)


class BEVSegmentationHead(nn.Module):
    def __init__(self, cfg: BEVSegHeadConfig | None = None):
        super().__init__()
        cfg = cfg or BEVSegHeadConfig()
        self.cfg = cfg
        self.classes = tuple(cfg.classes)
        c = cfg.in_channels
        self.transform = BEVGridTransform(cfg.input_scope, cfg.output_scope, cfg.prescale_factor)
        self.classifier = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, len(self.classes), 1),
        )

    def forward(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor] | Tensor:
        """With `target` [B, classes, Xm, Ym] (0/1): {'<cls>/focal', '<cls>/dice'} losses; else sigmoid probs."""
        if isinstance(x, (list, tuple)):
            x = x[0]
        logits = self.classifier(self.transform(x))
        if target is None:
            return torch.sigmoid(logits.float())
        return self.loss(logits, target)

    def loss(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        if target.shape[-2:] != logits.shape[-2:]:
            raise ValueError(f"map target is {tuple(target.shape[-2:])}, head outputs {tuple(logits.shape[-2:])} "
                             "(check map_bound vs output_scope)")
        losses: dict[str, Tensor] = {}
        for i, name in enumerate(self.classes):
            if cfg.loss == "focal":
                losses[f"{name}/focal"] = binary_focal_loss(logits[:, i], target[:, i], cfg.focal_gamma,
                                                            cfg.focal_alpha)
            elif cfg.loss == "xent":
                losses[f"{name}/xent"] = F.binary_cross_entropy_with_logits(logits[:, i].float(),
                                                                            target[:, i].float())
            else:
                raise ValueError(f"unknown map loss {cfg.loss!r} (focal | xent)")
            if cfg.dice_weight > 0:
                losses[f"{name}/dice"] = cfg.dice_weight * soft_dice_loss(logits[:, i], target[:, i],
                                                                          cfg.dice_smooth)
        return losses
