"""One interpretation of a checkpoint (issue 13): a corpus of layouts written from the real tiny model goes through
`bevctl.ckpt.check` (torch-free, the shipped manifest: what check-ckpt and the start preflight run) and through
the trainer's load (`model.checkpoint.load_file` / `extract_state_dict` / `partial_load`), and both must give
the same verdict and the same matched, missing, unexpected, mismatched, converted and non-finite keys."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from bevctl.ckpt import check  # noqa: E402
from model import checkpoint as ckpt  # noqa: E402
from tests.ckpt.corpus import mmdet3d_names, spconv1  # noqa: E402

GCA_NEW = ["task_gca.object.*", "task_gca.map.*"]


@pytest.fixture(scope="module")
def model():
    import model as _model  # noqa: F401 - shims
    from model.bevfusion import build_model
    from model.config import get_config

    torch.manual_seed(0)
    return build_model(get_config("tiny", gca="task"))


@pytest.fixture(scope="module")
def corpus(model, tmp_path_factory):
    """name -> (path, expect_missing, ok expected)."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("corpus")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    no_gca = {k: v for k, v in sd.items() if not k.startswith("task_gca.")}
    meta = {"epoch": 5, "bevctl_version": "0", "model_config": "tiny", "gca": "task"}
    files = {}

    def save(name, obj, expect=(), ok=True):
        torch.save(obj, d / f"{name}.pth")
        files[name] = (d / f"{name}.pth", list(expect), ok)

    save("plain", sd)
    save("model", {"model": sd})
    save("state_dict", {"meta": meta, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}})
    save("module", {"module": sd})
    save("nested", {"state_dict": {"model": sd}})
    save("ema", {"ema": sd})
    save("module_prefix", {"state_dict": {f"module.{k}": v for k, v in sd.items()}})
    save("compiled_ddp", {f"_orig_mod.module.{k}": v for k, v in sd.items()})
    save("spconv1", spconv1(no_gca), GCA_NEW)
    save("mmdet3d", {"state_dict": mmdet3d_names(spconv1(no_gca)), "meta": {"mmdet3d_version": "1.4.0"}}, GCA_NEW)
    save_file({k: v.contiguous() for k, v in no_gca.items()}, d / "st.safetensors", metadata={"epoch": "5"})
    files["safetensors"] = (d / "st.safetensors", GCA_NEW, True)
    save("fp16", {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()})
    nan = dict(sd)
    nan["heads.object.prediction_heads.0.heatmap.1.weight"] = sd["heads.object.prediction_heads.0.heatmap.1.weight"].clone()
    nan["heads.object.prediction_heads.0.heatmap.1.weight"][0, 0] = float("nan")
    nan["fuser.0.weight"] = sd["fuser.0.weight"].clone().fill_(float("inf"))
    save("nan", nan, ok=False)
    wrong = dict(sd)
    wrong["decoder.neck.deblocks.0.0.weight"] = torch.zeros(3, 3, 1, 1)
    save("wrong_shape", wrong, ok=False)
    save("wrong_gca", no_gca, ok=False)  # a gca-none checkpoint without expect_missing: task_gca missing
    shared = {**no_gca, "task_gca.shared.reduce.weight": torch.zeros(4, 4, 1, 1)}
    save("extra_keys", shared, GCA_NEW)
    return files


CASES = ["plain", "model", "state_dict", "module", "nested", "ema", "module_prefix", "compiled_ddp", "spconv1",
         "mmdet3d", "safetensors", "fp16", "nan", "wrong_shape", "wrong_gca", "extra_keys"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_check_ckpt_and_the_trainer_agree(name, corpus, model):
    path, expect, ok = corpus[name]
    report = check(path, model_config="tiny", gca="task", expect_missing=expect)
    target = copy.deepcopy(model)
    loaded = ckpt.partial_load(target, ckpt.extract_state_dict(ckpt.load_file(path)), path=str(path),
                               expect_missing=expect)
    plan = report.plan
    assert report.ok == loaded.ok == ok, (report.failure_line(), loaded.failure())
    assert set(plan.matched) == set(loaded.matched)
    assert set(plan.missing) == set(loaded.missing)
    assert set(plan.unexpected_missing) == set(loaded.unexpected_missing)
    assert set(plan.unexpected) == set(loaded.unexpected)
    assert plan.mismatched == loaded.mismatched
    assert plan.converted == loaded.converted
    assert plan.nonfinite == loaded.nonfinite
    if ok:
        assert len(loaded.matched) > 400


def test_what_each_layout_converts(corpus):
    def plan(name):
        path, expect, _ = corpus[name]
        return check(path, model_config="tiny", gca="task", expect_missing=expect).plan

    assert plan("plain").converted == {} and plan("module").converted == {}
    spconv = plan("spconv1").converted
    assert spconv and all(v == "permute(4, 0, 1, 2, 3)" for v in spconv.values())
    assert all(k.startswith("encoders.lidar.backbone.") for k in spconv)
    mm = plan("mmdet3d")
    assert mm.naming == "mmdet3d" and mm.box_convention == "mmdet3d"
    assert mm.converted["encoders.camera.backbone.patch_embed.projection.weight"].startswith("from img_backbone.")
    assert mm.converted["heads.object.decoder.0.multihead_attn.in_proj_weight"] == \
        "from bbox_head.decoder.0.cross_attn.attn.in_proj_weight"
    assert set(plan("fp16").converted.values()) == {"cast to float32"}
    assert plan("spconv1").box_convention == "mit-han-lab", "an original-layout file without bevctl metadata"
    assert plan("state_dict").box_convention == "mmdet3d", "bevctl's own files"
    nan = plan("nan")
    assert nan.nonfinite_groups() == {"fuser": 1, "heads.object": 1}


def test_converted_tensors_arrive_as_the_model_holds_them(corpus, model):
    target = copy.deepcopy(model)
    for p in target.parameters():
        p.data.zero_()
    path, expect, _ = corpus["mmdet3d"]
    report = ckpt.partial_load(target, ckpt.extract_state_dict(ckpt.load_file(path)), path=str(path),
                               expect_missing=expect)
    assert report.ok
    own, ref = target.state_dict(), model.state_dict()
    for key in ("encoders.lidar.backbone.conv_input.0.weight", "heads.object.decoder.0.linear1.weight",
                "encoders.camera.backbone.patch_embed.projection.weight"):
        assert torch.equal(own[key], ref[key]), key
    half = copy.deepcopy(model)
    path, _, _ = corpus["fp16"]
    assert ckpt.partial_load(half, ckpt.extract_state_dict(ckpt.load_file(path)), path=str(path)).ok
    w = half.state_dict()["fuser.0.weight"]
    assert w.dtype == torch.float32 and torch.allclose(w, ref["fuser.0.weight"], atol=1e-3)


def test_nan_is_refused_naming_the_module_groups(corpus, model, tmp_path):
    from tests.conftest import run_cli

    path, _, _ = corpus["nan"]
    result = run_cli("check-ckpt", str(path), "--model-config", "tiny", "--gca", "task", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "NaN/inf weights in fuser (1 tensor), heads.object (1 tensor)" in last
    skipped = run_cli("check-ckpt", str(path), "--model-config", "tiny", "--gca", "task", "--no-finite-check",
                      cwd=tmp_path)
    assert skipped.returncode == 0 and "not checked for NaN/inf" in skipped.stdout
    target = copy.deepcopy(model)
    before = target.state_dict()["fuser.0.weight"].clone()
    loaded = ckpt.partial_load(target, ckpt.extract_state_dict(ckpt.load_file(path)), path=str(path))
    assert not loaded.ok and "NaN/inf weights in fuser" in loaded.failure()
    assert torch.equal(target.state_dict()["fuser.0.weight"], before), "nothing is copied"


def test_config_is_inferred_from_metadata_or_shapes(corpus):
    from_meta = check(corpus["state_dict"][0])
    assert from_meta.ok and from_meta.inferred.how == "metadata"
    assert (from_meta.manifest.config, from_meta.manifest.gca) == ("tiny", "task")
    from_shapes = check(corpus["spconv1"][0], expect_missing=GCA_NEW)
    assert from_shapes.inferred.how == "shapes" and from_shapes.manifest.config == "tiny"
    assert from_shapes.manifest.gca == "none" and from_shapes.ok, from_shapes.failure_line()
    assert any("model inferred from its tensor shapes: tiny" in n for n in from_shapes.notes)


def test_a_tiny_checkpoint_against_full_says_so_first(corpus, tmp_path):
    from tests.conftest import run_cli

    path = corpus["plain"][0]
    report = check(path, model_config="full", gca="task")
    assert not report.ok and report.looks_like is not None and report.looks_like.config == "tiny"
    assert "expect_missing" not in report.suggestions
    result = run_cli("check-ckpt", str(path), "--model-config", "full", cwd=tmp_path)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1
    assert lines[0].startswith("this looks like a tiny checkpoint")
    assert "--expect-missing" not in result.stdout
    assert "--model-config tiny" in lines[-1]
