"""Shared pieces of the numerical equivalence tests (tests/model/test_equivalence_*.py)."""

from __future__ import annotations

import pytest
import torch

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def one_thread():
    """Compare at 1e-5 with one intra-op thread: reductions split across threads round differently."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomize(module: torch.nn.Module, seed: int = 0, scale: float | str = 0.2, bias_scale: float = 0.5,
              skip: tuple[str, ...] = ()) -> torch.nn.Module:
    """Fill every float parameter and buffer with seeded random values (positive running variances), so a
    comparison exercises every weight. `scale="fan_in"` draws weights ~ 1/sqrt(fan-in): sigmoids stay
    unsaturated, so top-k selections have no ties."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.dtype.is_floating_point or name.rsplit(".", 1)[-1] in skip:
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) * (t[0].numel() ** -0.5 if scale == "fan_in" else scale))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * bias_scale)
    return module
