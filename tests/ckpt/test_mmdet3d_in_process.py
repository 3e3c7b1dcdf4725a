"""A process that has imported mmdet3d still loads checkpoints into the bundled model unchanged.

Importing mmdet3d's sparse layers runs its `register_spconv2`, which replaces spconv's `_load_from_state_dict` with
one that permutes every sparse kernel of a state dict whose module version is not 2, taking it for spconv 1.x. A
tool built on mmdet3d that uses `model/` (the interop target), or a test session that ran the mmdet3d oracles, is
such a process. `model.checkpoint.partial_load` hands over tensors already in the model's layout, with the model's
own module versions.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model import checkpoint as ckpt  # noqa: E402
from tests.ckpt.corpus import spconv1  # noqa: E402


@pytest.mark.mmdet
@pytest.mark.parametrize("layout", ["spconv2", "spconv1"])
def test_a_checkpoint_loads_unchanged_after_mmdet3d_patched_spconv(layout, monkeypatch, tmp_path):
    from spconv.pytorch import SparseModule

    # mmdet3d's patch is process-wide: whatever this test's import adds is undone afterwards
    monkeypatch.setattr(SparseModule, "_load_from_state_dict", SparseModule._load_from_state_dict)
    monkeypatch.setattr(SparseModule, "_version", getattr(SparseModule, "_version", 1))
    try:
        from mmdet3d.models.layers.spconv import register_spconv2
    except Exception as exc:  # ImportError, or mmcv's version/ops checks
        pytest.skip(f"mmdet3d unavailable ({type(exc).__name__}: {exc}); run `bash tests/setup_extras.sh`")
    assert register_spconv2() and SparseModule._version == 2  # what its import does once per process

    from model.bevfusion import build_model
    from model.config import get_config

    torch.manual_seed(0)
    source = build_model(get_config("tiny", gca="none")).state_dict()
    path = tmp_path / "c.pth"
    torch.save({"state_dict": spconv1(source) if layout == "spconv1" else source}, path)
    target = build_model(get_config("tiny", gca="none"))
    for p in target.parameters():
        if p.is_floating_point():
            p.data.zero_()
    report = ckpt.partial_load(target, ckpt.extract_state_dict(ckpt.load_file(path)), path=str(path))
    assert report.ok, report.failure()
    loaded = target.state_dict()
    for key, value in source.items():
        if value.is_floating_point():
            assert torch.equal(loaded[key], value), key
