"""The shipped key manifests (bevctl/manifests/*.json) equal what the model code builds (on the meta device)."""

from __future__ import annotations

import json

import pytest

from bevctl.ckpt.rules import GROUPS
from model.manifest import CONFIGS, GCA_MODES, build_manifest, path_for, render


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("gca", GCA_MODES)
def test_shipped_manifest_is_current(config, gca):
    built = render(build_manifest(config, gca))
    shipped = path_for(config, gca)
    assert shipped.is_file(), f"missing {shipped}: run `python -m model.manifest --write`"
    assert json.loads(shipped.read_text()) == json.loads(built), (
        f"{shipped.name} is stale: run `python -m model.manifest --write` and commit the result")


def test_manifest_format():
    m = json.loads(path_for("full", "task").read_text())
    assert m["schema"] == 1 and m["config"] == "full" and m["gca"] == "task" and m["heads"] == ["object", "map"]
    assert m["model_version"]
    keys = {k["name"]: k for k in m["keys"]}
    assert set(k["group"] for k in m["keys"]) <= set(GROUPS)
    assert keys["task_gca.object.reduce.weight"] == {"name": "task_gca.object.reduce.weight", "shape": [128, 512, 1, 1],
                                                     "dtype": "float32", "group": "task_gca.object", "kind": "param"}
    assert keys["encoders.camera.backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"]["kind"] == "buffer"
    assert keys["encoders.camera.vtransform.nx"]["dtype"] == "int64"
    assert keys["fuser.1.num_batches_tracked"]["kind"] == "buffer"
    gca = sum(_numel(k["shape"]) for k in m["keys"] if k["group"].startswith("task_gca."))
    assert gca == 262_144
    none = json.loads(path_for("full", "none").read_text())
    assert {k["name"] for k in m["keys"]} - {k["name"] for k in none["keys"]} == {
        "task_gca.object.reduce.weight", "task_gca.object.expand.weight", "task_gca.map.reduce.weight",
        "task_gca.map.expand.weight"}


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n
