"""Precise BatchNorm: recompute every BN layer's running statistics on training batches before an evaluation.

BEVFusion's decoder and sparse encoder use BN momentum 0.01, so after a short training much of each running
statistic is still its initial value and eval-mode predictions are far from train-mode ones. This replaces the
statistics with the exact average over `num_batches` batches (the model in train mode, no gradients; ranks average
theirs), as fvcore's `update_bn_stats`. RNG states are kept, so a run with it resumes exactly.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from model import checkpoint as ckpt
from model import distributed as dist_utils
from model.data.batch import to_device
from model.distributed import DistInfo


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable, num_batches: int, info: DistInfo) -> int:
    """Set the running mean/var of every BN layer to their average over `num_batches` batches; returns the count."""
    layers = bn_layers(model)
    if not layers or num_batches <= 0:
        return 0
    rng = ckpt.rng_state()
    was_training = model.training
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: after n batches, the mean of the n batch statistics
    seen = 0
    try:
        model.train()
        for batch in batches:
            if seen >= num_batches:
                break
            model(to_device(batch, info.device))
            seen += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
        ckpt.set_rng_state(rng)
    for m in layers:
        dist_utils.mean_tensor_(m.running_mean, info)
        dist_utils.mean_tensor_(m.running_var, info)
    return seen
