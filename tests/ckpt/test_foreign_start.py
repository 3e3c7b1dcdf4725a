"""The done-when of issue 13 through the real parts: foreign checkpoint layouts pass `bevctl check-ckpt` and then
train one demo step through `bevctl start demo-phase4a --set load_from=F --yes --local --wait`; a NaN checkpoint is
refused by the start preflight with one line naming the module group."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from tests.ckpt.corpus import mmdet3d_names, spconv1  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.helpers.synth_data import small_dataset  # noqa: E402
from tests.safety.hostile import expect_refusal  # noqa: E402

LAYOUTS = ("original", "module", "safetensors", "mmdet3d")
ONE_STEP = ["--set", "train.epochs=1", "--set", "train.max_iters_per_epoch=1", "--set", "train.eval_interval=0",
            "--set", "train.batch_size=1", "--set", "data.workers=0", "--set", "launch.cpu_processes=1",
            # the small test dataset is v1.0-mini; the demo phases read v1.0-trainval
            "--set", "data.version=v1.0-mini", "--set", "data.train_split=mini_train", "--set", "data.val_split=mini_val",
            "--set", "data.synth.scenes=2"]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A demo-phase3-like tiny model (no GCA) saved the ways other tools save it."""
    import model  # noqa: F401 - shims
    from model.bevfusion import build_model
    from model.config import get_config
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(0)
    sd = build_model(get_config("tiny", gca="none")).state_dict()
    files = {name: d / f"{name}.pth" for name in LAYOUTS}
    torch.save(spconv1(sd), files["original"])  # the original's spconv 1.x kernels, a bare state dict
    torch.save({"module": sd}, files["module"])
    files["safetensors"] = d / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, files["safetensors"])
    torch.save({"state_dict": mmdet3d_names(sd), "meta": {"mmdet3d_version": "1.4.0"}}, files["mmdet3d"])
    bad = dict(sd)
    bad["heads.object.prediction_heads.0.heatmap.1.weight"] = sd["heads.object.prediction_heads.0.heatmap.1.weight"].clone()
    bad["heads.object.prediction_heads.0.heatmap.1.weight"][0, 0] = float("nan")
    files["nan"] = d / "nan.pth"
    torch.save({"state_dict": bad}, files["nan"])
    return files, small_dataset()


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_foreign_layout_checks_then_trains_a_step(layout, foreign, tmp_path):
    files, root = foreign
    path = files[layout]
    checked = run_cli("check-ckpt", str(path), "--phase", "demo-phase4a", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "compatible" in checked.stdout.strip().splitlines()[-1]
    started = run_cli("start", "demo-phase4a", "--set", f"load_from={path}", "--set", f"data.root={root}", *ONE_STEP,
                      "--name", f"foreign-{layout}", "--yes", "--local", "--wait", cwd=tmp_path, timeout=400)
    assert started.returncode == 0, started.stdout + started.stderr
    run_dir = tmp_path / "runs" / f"foreign-{layout}"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    loaded = [e for e in events if e.get("event") == "checkpoint_loaded" or e.get("kind") == "checkpoint_loaded"]
    assert loaded and loaded[0]["ok"] and loaded[0]["matched"] == 439, loaded
    assert loaded[0]["box_convention"] == ("mit-han-lab" if layout != "mmdet3d" else "mmdet3d")
    assert any(e.get("event", e.get("kind")) == "train" for e in events)
    assert (run_dir / "latest.pth").is_file()


def test_nan_checkpoint_is_refused_by_the_start_preflight(foreign, tmp_path):
    files, root = foreign
    result = run_cli("start", "demo-phase4a", "--set", f"load_from={files['nan']}", "--set", f"data.root={root}",
                     "--yes", "--local", cwd=tmp_path)
    line = expect_refusal(result, 1, ["NaN/inf weights in heads.object", "heatmap.1.weight"], lines=None)
    assert "preflight failed" in line
    assert not (tmp_path / "runs" / "demo-phase4a").exists()
