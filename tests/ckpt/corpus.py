"""Checkpoint layouts seen in the wild, written from a real state dict (shared by the corpus and round-trip tests)."""

from __future__ import annotations

import re

from bevctl.ckpt import rules

SPCONV1 = (1, 2, 3, 4, 0)  # ours (out, k, k, k, in) -> spconv 1.x (k, k, k, in, out)


def spconv1(sd: dict) -> dict:
    """The original's sparse-conv kernel layout for every 5-D weight of the LiDAR encoder."""
    return {k: (v.permute(*SPCONV1).contiguous() if v.dim() == 5 and k.startswith("encoders.lidar.") else v)
            for k, v in sd.items()}




def mmdet3d_names(sd: dict) -> dict:
    """mmdetection3d 1.x projects/BEVFusion names (the inverse of bevctl.ckpt.rules' map)."""
    out = {}
    for key, value in sd.items():
        m = re.match(r"^(heads\.object\.decoder\.\d+)\.(.*)$", key)
        if m:
            for ours, theirs in (("self_attn.", "self_attn.attn."), ("multihead_attn.", "cross_attn.attn."),
                                 ("linear1.", "ffn.layers.0.0."), ("linear2.", "ffn.layers.1."),
                                 ("norm1.", "norms.0."), ("norm2.", "norms.1."), ("norm3.", "norms.2.")):
                if m.group(2).startswith(ours):
                    key = f"{m.group(1)}.{theirs}{m.group(2)[len(ours):]}"
                    break
        for theirs, ours in rules.MMDET3D_PREFIXES:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        out[key] = value
    return out
