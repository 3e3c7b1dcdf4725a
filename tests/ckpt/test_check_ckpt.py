"""`bevctl check-ckpt` on real files written by torch.save, through the CLI and the Python API.

A small model with the bundled BEVFusion's module tree (encoders.camera.backbone, ..., task_gca.object, heads.map)
stands in where a model is needed, so these tests stay fast and do not depend on `model/`.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from bevctl.ckpt import CheckpointUnreadable, check  # noqa: E402
from bevctl.ckpt.manifest import manifest_from_module, to_dict  # noqa: E402
from tests.conftest import ROOT, run_cli  # noqa: E402


class _Attn(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(c, 2)
        self.multihead_attn = nn.MultiheadAttention(c, 2)
        self.linear1 = nn.Linear(c, 2 * c)
        self.linear2 = nn.Linear(2 * c, c)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)


class _Swinish(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 8, 4, 4)
        self.ffn = nn.Sequential(nn.Sequential(nn.Linear(8, 16)), nn.Linear(16, 8))
        self.register_buffer("relative_position_index", torch.zeros(4, 4, dtype=torch.long))


class _Sparse(nn.Module):
    """spconv 2.x keeps weights as (out, kD, kH, kW, in)."""

    def __init__(self):
        super().__init__()
        self.conv_input = nn.ParameterList([nn.Parameter(torch.zeros(16, 3, 3, 3, 5))])
        self.bn = nn.BatchNorm1d(16)


class _VTransform(nn.Module):
    def __init__(self):
        super().__init__()
        self.depthnet = nn.Conv2d(8, 12, 1)
        for name in ("frustum", "dx", "bx", "nx"):
            self.register_buffer(name, torch.zeros(3))


class MiniBEVFusion(nn.Module):
    def __init__(self, gca: str = "task", heads=("object", "map")):
        super().__init__()
        self.encoders = nn.ModuleDict({
            "camera": nn.ModuleDict({"backbone": _Swinish(), "neck": nn.Conv2d(8, 8, 1), "vtransform": _VTransform()}),
            "lidar": nn.ModuleDict({"backbone": _Sparse()}),
        })
        self.fuser = nn.Sequential(nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16))
        self.decoder = nn.ModuleDict({"backbone": nn.Conv2d(16, 32, 3), "neck": nn.Conv2d(32, 32, 1)})
        if gca == "task":
            self.task_gca = nn.ModuleDict({h: nn.Linear(32, 16, bias=False) for h in heads})
        elif gca == "shared":
            self.task_gca = nn.ModuleDict({"shared": nn.Linear(32, 16, bias=False)})
        self.heads = nn.ModuleDict()
        if "object" in heads:
            obj = nn.Module()
            obj.shared_conv = nn.Conv2d(32, 8, 3)
            obj.decoder = nn.ModuleList([_Attn(8)])
            self.heads["object"] = obj
        if "map" in heads:
            self.heads["map"] = nn.Sequential(nn.Conv2d(32, 6, 1))


def write_manifest(path: Path, gca: str = "task", heads=("object", "map")) -> Path:
    manifest = manifest_from_module(MiniBEVFusion(gca, heads), config="mini", gca=gca, heads=list(heads))
    path.write_text(json.dumps(to_dict(manifest)))
    return path


def save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def trainer_style(model: nn.Module, epoch: int = 5) -> dict:
    opt = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return {"meta": {"epoch": epoch, "iter": 1000, "torch_version": torch.__version__, "gca": "none"},
            "state_dict": model.state_dict(), "optimizer": opt.state_dict()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return make_files(tmp_path_factory.mktemp("ckpt"))


def make_files(d: Path) -> dict[str, Path]:
    f = {"task": write_manifest(d / "mini-task.json", "task"), "none": write_manifest(d / "mini-none.json", "none")}
    torch.manual_seed(0)
    no_gca = MiniBEVFusion("none")
    f["epoch5"] = save(d / "epoch_5.pth", trainer_style(no_gca))
    f["ddp"] = save(d / "ddp.pth", {"state_dict": {"module." + k: v for k, v in no_gca.state_dict().items()}})
    f["nested"] = save(d / "nested.pth", {"model": {"module": {"_orig_mod." + k: v for k, v in no_gca.state_dict().items()}}})
    f["flat"] = save(d / "flat.pth", MiniBEVFusion("task").state_dict())
    bad = dict(MiniBEVFusion("task").state_dict())
    bad["fuser.0.weight"] = torch.zeros(16, 20, 3, 3)
    f["mismatch"] = save(d / "mismatch.pth", {"state_dict": bad})
    old = dict(MiniBEVFusion("task").state_dict())
    old["encoders.lidar.backbone.conv_input.0"] = torch.zeros(3, 3, 3, 5, 16)  # spconv 1.x (k, k, k, in, out)
    f["spconv1"] = save(d / "spconv1.pth", {"state_dict": old})
    backbone = {"backbone." + k.removeprefix("encoders.camera.backbone."): v
                for k, v in no_gca.state_dict().items() if k.startswith("encoders.camera.backbone.")}
    f["backbone_only"] = save(d / "backbone.pth", {"state_dict": backbone})
    f["truncated"] = d / "truncated.pth"
    f["truncated"].write_bytes(f["epoch5"].read_bytes()[: f["epoch5"].stat().st_size // 2])
    f["empty"] = d / "empty.pth"
    f["empty"].write_bytes(b"")
    f["text"] = d / "notes.pth"
    f["text"].write_text("epoch 5 looked good\nloss/map/divider/dice 0.52\n")
    f["evil_marker"] = d / "pwned"
    f["evil"] = save(d / "evil.pth", {"state_dict": no_gca.state_dict(), "x": _Evil(f["evil_marker"])})
    f["evil_raw"] = d / "evil_raw.pkl"
    import pickle

    f["evil_raw"].write_bytes(pickle.dumps(_Evil(f["evil_marker"]), protocol=2))
    f["safetensors"] = write_safetensors(d / "model.safetensors", MiniBEVFusion("task").state_dict())
    return f


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_safetensors(path: Path, state: dict) -> Path:
    codes = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, offset = {"__metadata__": {"epoch": "7"}}, [], 0
    for name, t in state.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    return path


MMDET3D = [("encoders.camera.backbone.", "img_backbone."), ("encoders.camera.neck.", "img_neck."),
           ("encoders.camera.vtransform.", "view_transform."), ("encoders.lidar.backbone.", "pts_middle_encoder."),
           ("fuser.", "fusion_layer."), ("decoder.backbone.", "pts_backbone."), ("decoder.neck.", "pts_neck."),
           ("heads.object.", "bbox_head.")]
LAYER = [(".self_attn.", ".self_attn.attn."), (".multihead_attn.", ".cross_attn.attn."),
         (".linear1.", ".ffn.layers.0.0."), (".linear2.", ".ffn.layers.1."),
         (".norm1.", ".norms.0."), (".norm2.", ".norms.1."), (".norm3.", ".norms.2.")]


def to_mmdet3d_names(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith(("task_gca.", "heads.map.")):
            continue
        if key.startswith("heads.object.decoder."):
            for old, new in LAYER:
                key = key.replace(old, new)
        for old, new in MMDET3D:
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def report_json(path, manifest, **kw) -> dict:
    from bevctl.ckpt.manifest import load_manifest

    return check(path, manifest=load_manifest(str(manifest)), **kw).to_json()


# ------------------------------------------------------------------------------------------ the seed's case


def test_seed_case_without_expectation_fails_and_prints_the_glob(files):
    result = run_cli("check-ckpt", str(files["epoch5"]), "--model-config", str(files["task"]))
    assert result.returncode == 1, result.stderr
    assert "--expect-missing 'task_gca.*'" in result.stdout
    assert "task_gca.object" in result.stdout and "❌" in result.stdout
    assert "Traceback" not in result.stderr


def test_seed_case_with_expect_missing_passes(files):
    result = run_cli("check-ckpt", str(files["epoch5"]), "--model-config", str(files["task"]),
                     "--expect-missing", "task_gca.*", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["ok"] is True and data["exit_code"] == 0
    verdicts = {g["group"]: g["verdict"] for g in data["groups"]}
    assert verdicts["task_gca.object"] == verdicts["task_gca.map"] == "new"
    assert all(v == "kept" for g, v in verdicts.items() if not g.startswith("task_gca"))
    assert data["summary"]["new_params"] == 2 * 16 * 32
    assert data["summary"]["missing"] == 0 and data["summary"]["mismatch"] == 0
    assert "task_gca.object 512 new" in data["headline"]
    assert data["checkpoint"]["meta"]["epoch"] == 5
    assert data["checkpoint"]["optimizer"]["params_with_state"] > 0
    ignored = {e["key"] for e in data["entries"]["ignored"]}
    assert "fuser.1.num_batches_tracked" in ignored and "encoders.camera.vtransform.frustum" in ignored
    assert "encoders.camera.backbone.relative_position_index" in ignored


def test_seed_case_with_the_phase(files, tmp_path):
    """The shipped phase4a's expectations accept it; a phase YAML pointing at the manifest works from the CLI."""
    from bevctl.ckpt.manifest import load_manifest

    report = check(files["epoch5"], phase="phase4a", manifest=load_manifest(str(files["task"])))
    assert report.ok and report.exit_code == 0
    assert report.expect_missing == ["task_gca.object.*", "task_gca.map.*"]
    phase = tmp_path / "p4a.yaml"
    phase.write_text(f"model: {{config: {files['task']}, gca: task}}\nload_from: {files['epoch5']}\n"
                     "expect_missing: ['task_gca.object.*', 'task_gca.map.*']\n")
    result = run_cli("check-ckpt", "--phase", str(phase))  # the checkpoint comes from load_from
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✅ compatible" in result.stdout and "✨ new" in result.stdout


def test_python_api_report(files):
    report = check(files["epoch5"], model_config=str(files["task"]), expect_missing=["task_gca.object.*"])
    assert not report.ok and report.exit_code == 1
    assert report.suggestions["expect_missing"] == ["task_gca.map.*"]
    assert "--expect-missing 'task_gca.map.*'" in report.failure_line()
    assert report.kept_params == sum(p.numel() for n, p in MiniBEVFusion("none").named_parameters())


# ------------------------------------------------------------------------------------------ shapes of files


def test_ddp_prefix_is_stripped(files):
    data = report_json(files["ddp"], files["task"], expect_missing=["task_gca.*"])
    assert data["ok"] and data["checkpoint"]["stripped_prefixes"] == {"module.": data["checkpoint"]["tensors"]}


def test_nested_and_compiled_are_unwrapped(files):
    data = report_json(files["nested"], files["none"])
    assert data["ok"] and data["checkpoint"]["nesting"] == ["model", "module"]
    assert set(data["checkpoint"]["stripped_prefixes"]) == {"_orig_mod."}
    assert data["checkpoint"]["optimizer"] is None


def test_safetensors_header_only(files):
    data = report_json(files["safetensors"], files["task"])
    assert data["ok"] and data["checkpoint"]["format"] == "safetensors"
    assert data["checkpoint"]["meta"]["epoch"] == "7"


def test_truncated_safetensors_is_unreadable(files, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(files["safetensors"].read_bytes()[:-100])
    with pytest.raises(CheckpointUnreadable, match="truncated"):
        check(cut, model_config=str(files["task"]))


def test_shape_mismatch_fails(files):
    result = run_cli("check-ckpt", str(files["mismatch"]), "--model-config", str(files["task"]), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    [entry] = data["entries"]["mismatch"]
    assert entry["key"] == "fuser.0.weight" and entry["checkpoint_shape"] == [16, 20, 3, 3]
    assert {g["group"]: g["verdict"] for g in data["groups"]}["fuser"] == "problem"


def test_spconv1_layout_is_a_conversion_not_a_mismatch(files):
    data = report_json(files["spconv1"], files["task"])
    assert data["ok"]
    [entry] = data["entries"]["layout"]
    assert entry["checkpoint_shape"] == [3, 3, 3, 5, 16] and entry["model_shape"] == [16, 3, 3, 3, 5]
    assert "spconv1->spconv2" in entry["note"]


def test_prefix_suggestion_for_a_backbone_only_checkpoint(files):
    report = check(files["backbone_only"], model_config=str(files["task"]))
    assert not report.ok
    prefix = report.suggestions["prefix"]
    assert (prefix["regex"], prefix["replacement"]) == (r"^backbone\.", "encoders.camera.backbone.")
    fixed = check(files["backbone_only"], model_config=str(files["task"]),
                  remap=[r"^backbone\.=encoders.camera.backbone."])
    groups = {g.name: g for g in fixed.comparison.groups}
    assert groups["encoders.camera.backbone"].verdict == "kept" and groups["fuser"].verdict == "problem"


def test_mmdet3d_names_are_recognised_and_mapped(files, tmp_path):
    path = save(tmp_path / "mmdet3d.pth", {"state_dict": to_mmdet3d_names(MiniBEVFusion("task").state_dict())})
    auto = check(path, model_config=str(files["task"]), expect_missing=["task_gca.*", "heads.map.*"])
    assert auto.ok and auto.plan.naming == "mmdet3d", auto.failure_line()
    assert any("mmdetection3d 1.x" in n for n in auto.notes)
    mapped = check(path, model_config=str(files["task"]), expect_missing=["task_gca.*", "heads.map.*"], mmdet3d=True)
    assert mapped.ok, mapped.failure_line()
    assert mapped.plan.converted == auto.plan.converted
    assert not mapped.entries("unexpected")
    # the Swin FFN (ffn.layers.0.0) keeps its name: only the TransFusion decoder layer is renamed
    assert any(e.key == "encoders.camera.backbone.ffn.0.0.weight" for e in mapped.entries("matched"))


def test_unexpected_keys_are_reported_and_can_be_allowed(files, tmp_path):
    path = save(tmp_path / "extra.pth", {**MiniBEVFusion("task").state_dict(), "heads.radar.weight": torch.zeros(3)})
    report = check(path, model_config=str(files["task"]))
    assert report.ok and [e.key for e in report.entries("unexpected")] == ["heads.radar.weight"]
    assert report.suggestions["allow_unexpected"] == ["heads.radar.*"]
    allowed = check(path, model_config=str(files["task"]), allow_unexpected=["heads.radar.*"])
    assert not allowed.entries("unexpected") and allowed.entries("allowed")


# ------------------------------------------------------------------------------------------ unreadable and unsafe


@pytest.mark.parametrize("name, words", [
    ("truncated", "damaged"), ("empty", "empty (0 bytes)"), ("text", "text file"), (None, "not found"),
])
def test_unreadable_files_exit_2_with_one_line(files, tmp_path, name, words):
    path = files[name] if name else tmp_path / "nope.pth"
    result = run_cli("check-ckpt", str(path), "--model-config", str(files["task"]))
    assert result.returncode == 2
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_unsafe_pickles_are_refused_without_running(files):
    for key in ("evil", "evil_raw"):
        result = run_cli("check-ckpt", str(files[key]), "--model-config", str(files["task"]), "--json")
        assert result.returncode == 2
        assert "posix.system" in result.stderr and "--trust" in result.stderr
        assert json.loads(result.stdout)["exit_code"] == 2
        assert not files["evil_marker"].exists()


def test_damaged_storage_entry_is_caught(files, tmp_path):
    """A zip whose directory is intact but whose tensor bytes are short (a bad copy) is not a checkpoint to start from."""
    src = zipfile.ZipFile(files["flat"])
    out = tmp_path / "short.pth"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[: len(data) // 2] if "/data/" in info.filename else data)
    with pytest.raises(CheckpointUnreadable, match="damaged"):
        check(out, model_config=str(files["task"]))


def test_foreign_globals_need_trust(files, tmp_path):
    import argparse

    path = save(tmp_path / "mmcv.pth", {"meta": {"config": argparse.Namespace(lr=1)},
                                         "state_dict": MiniBEVFusion("task").state_dict()})
    result = run_cli("check-ckpt", str(path), "--model-config", str(files["task"]))
    assert result.returncode == 2 and "argparse.Namespace" in result.stderr
    trusted = check(path, model_config=str(files["task"]), trust=True)  # in-process: torch is already imported
    assert trusted.ok and trusted.checkpoint.format == "trusted-torch" and trusted.to_json()["checkpoint"]["trusted_load"]
    assert any("weights_only=False" in note for note in trusted.notes)


def test_numpy_rng_state_and_torch_version_are_inert(files, tmp_path):
    np = pytest.importorskip("numpy")
    path = save(tmp_path / "rng.pth", {"meta": {"torch_version": torch.__version__},
                                        "state_dict": MiniBEVFusion("task").state_dict(),
                                        "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()}})
    assert check(path, model_config=str(files["task"])).ok


def test_legacy_format_loads_with_torch_weights_only(files, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": MiniBEVFusion("task").state_dict()}, path, _use_new_zipfile_serialization=False)
    report = check(path, model_config=str(files["task"]))
    assert report.ok and report.checkpoint.format == "legacy-torch"


# ------------------------------------------------------------------------------------------ without torch

NO_TORCH = r"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"blocked {name}", name=name)
        return None

sys.meta_path.insert(0, Block())
from bevctl.entry import main

codes = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code or 0)
    print("@@", flush=True)
print("CODES=" + json.dumps(codes))
print("TORCH_IMPORTED=" + str(any(m == "torch" or m.startswith("torch.") for m in sys.modules)))
"""


def test_the_same_checks_without_torch(files, tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": MiniBEVFusion("task").state_dict()}, legacy, _use_new_zipfile_serialization=False)
    m = ["--model-config", str(files["task"])]
    phase = tmp_path / "p4a.yaml"
    phase.write_text(f"model: {{config: {files['task']}, gca: task}}\nload_from: {files['epoch5']}\n"
                     "expect_missing: ['task_gca.object.*', 'task_gca.map.*']\n")
    cases = [
        (["--phase", str(phase)], 0),
        ([str(files["epoch5"]), *m], 1),
        ([str(files["epoch5"]), *m, "--expect-missing", "task_gca.*"], 0),
        ([str(files["ddp"]), *m, "--expect-missing", "task_gca.*"], 0),
        ([str(files["nested"]), "--model-config", str(files["none"])], 0),
        ([str(files["safetensors"]), *m], 0),
        ([str(files["mismatch"]), *m], 1),
        ([str(files["spconv1"]), *m], 0),
        ([str(files["truncated"]), *m], 2),
        ([str(files["empty"]), *m], 2),
        ([str(files["text"]), *m], 2),
        ([str(files["evil"]), *m], 2),
        ([str(files["evil_raw"]), *m], 2),
        ([str(legacy), *m], 2),
        ([str(files["epoch5"]), "--model-config", "tiny", "--gca", "none", "--live"], 2),
        ([str(files["epoch5"]), *m, "--json", "--expect-missing", "task_gca.*"], 0),
    ]
    argvs = [["check-ckpt", *argv] for argv, _ in cases]
    result = subprocess.run([sys.executable, "-c", NO_TORCH, json.dumps(argvs)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}, timeout=120)
    assert "TORCH_IMPORTED=False" in result.stdout, result.stdout + result.stderr
    codes = json.loads(result.stdout.split("CODES=")[1].splitlines()[0])
    assert codes == [code for _, code in cases], result.stdout + result.stderr
    assert "legacy" in result.stderr and "needs torch" in result.stderr
    assert "Traceback" not in result.stderr
    assert not files["evil_marker"].exists()


def test_importing_the_api_does_not_import_torch():
    code = "import sys, bevctl.ckpt, bevctl.commands.check_ckpt; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stderr


# ------------------------------------------------------------------------------------------ the bundled model


def test_bundled_tiny_model_seed_case_live(tmp_path):
    """A checkpoint exactly as the trainer writes it (model.train.checkpoint_state: meta, state_dict, optimizer,
    scheduler, scaler, rng, data_state) for the tiny model without GCA, against a live build of the task-GCA model."""
    pytest.importorskip("model.bevfusion")
    train = pytest.importorskip("model.train")
    from bevctl.phases import OptimSpec
    from model.bevfusion import build_model
    from model.checkpoint import rng_state, save_run_checkpoint
    from model.config import get_config
    from model.schedule import LRSchedule, ScheduleSpec

    model = build_model(get_config("tiny", "none"))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    state = train.checkpoint_state(
        model, opt, LRSchedule(opt, ScheduleSpec.from_optim(OptimSpec(), 100)), torch.amp.GradScaler("cpu", enabled=True),
        meta={"epoch": 5, "iter": 40, "torch_version": str(torch.__version__), "gca": "none", "model_config": "tiny"},
        rng=[rng_state()], data_state={"epoch": 5, "samples_done": 0, "seed": 0, "world_size": 1},
    )
    path = save_run_checkpoint(tmp_path, state, 5, max_keep=1)
    report = check(path, model_config="tiny", gca="task", live=True, expect_missing=["task_gca.*"])
    assert report.ok, report.failure_line()
    assert report.checkpoint.meta["epoch"] == 5 and report.checkpoint.optimizer is not None
    gca = build_model(get_config("tiny", "task"), device="meta").gca_params()
    new = {g.name: g.param_counts.get("new", 0) for g in report.comparison.groups if g.name.startswith("task_gca.")}
    assert new == {f"task_gca.{task}": n for task, n in gca.items()}
    strict = check(path, model_config="tiny", gca="task", live=True)
    assert strict.exit_code == 1 and strict.suggestions["expect_missing"] == ["task_gca.*"]


def test_launcher_facing_api(files):
    """What `bevctl start`'s preflight reads: summary totals, per-group counts, headline and fix."""
    ok = check(files["epoch5"], model_config=str(files["task"]), expect_missing=["task_gca.*"])
    assert ok.summary["missing_globs"] == ["task_gca.*"] and ok.summary["matched_keys"] > 0
    assert ok.summary["matched_params"] == ok.kept_params and ok.fix() == ""
    groups = {g.name: g for g in ok.groups}
    assert groups["task_gca.object"].missing_params == 512 and groups["task_gca.object"].matched_keys == 0
    assert groups["fuser"].matched_keys and not groups["fuser"].missing_keys and not groups["fuser"].mismatched_keys
    bad = check(files["epoch5"], model_config=str(files["task"]))
    assert "task_gca.*" in bad.fix() and "2 keys missing" in bad.headline()


def test_bad_gca_with_json_is_a_json_error(files):
    result = run_cli("check-ckpt", str(files["flat"]), "--gca", "both", "--json")
    assert result.returncode == 2 and json.loads(result.stdout)["error"].startswith("--gca")


def test_model_config_yaml_is_built_live(tmp_path):
    pytest.importorskip("model.bevfusion")
    from model.bevfusion import build_model
    from model.config import get_config

    path = save(tmp_path / "tiny.pth", {"state_dict": build_model(get_config("tiny", "shared"), device="cpu").state_dict()})
    cfg = tmp_path / "my-tiny.yaml"
    cfg.write_text("base: tiny\n")
    report = check(path, model_config=str(cfg), gca="shared")
    assert report.ok and report.manifest.source == "live (meta device)"
    assert any(g.name == "task_gca.shared" and g.verdict == "kept" for g in report.groups)


def test_heads_subset_drops_the_other_head(files):
    report = check(files["flat"], model_config=str(files["task"]), heads=["object"])
    groups = {g.name: g for g in report.groups}
    assert report.ok and groups["heads.map"].verdict == "unused" and not groups["heads.map"].in_model
    assert "task_gca.map" in groups and not groups["task_gca.map"].in_model


# ------------------------------------------------------------------------ the fast entry path (bevctl/entry.py)


def test_fast_entry_options_are_the_typer_commands_options():
    """The Typer command is built from bevctl.ckpt.command.OPTIONS, the table bevctl/entry.py parses with."""
    import typer.main

    from bevctl.ckpt import command as options
    from bevctl.cli import app

    command = typer.main.get_command(app).commands["check-ckpt"]
    flags, values, lists, arguments = {}, {}, {}, []
    for param in command.params:
        if param.param_type_name == "argument":
            arguments.append(param.name)
            continue
        for opt in param.opts:
            if opt in ("-h", "--help"):
                continue
            table = flags if param.is_flag else lists if param.multiple else values
            table[opt] = param.name
    assert flags == options.FLAGS
    assert values == options.VALUES
    assert lists == options.LISTS
    assert arguments == ["checkpoint"]


@pytest.mark.parametrize("argv", [
    [],
    ["runs/p3/epoch_5.pth"],
    ["e.pth", "--phase", "phase4a"],
    ["--model-config=full", "e.pth", "--gca", "task", "--json"],
    ["e.pth", "--expect-missing", "task_gca.*", "--expect-missing=heads.map.*", "--allow-unexpected", "x.*"],
    ["e.pth", "--remap", r"^backbone\.=encoders.camera.backbone.", "--remap", "a=b", "--mmdet3d", "--live", "--trust"],
    ["e.pth", "--expect-missing", "-weird-glob"],
])
def test_fast_entry_parses_like_typer(argv, monkeypatch):
    import inspect

    import bevctl.ckpt.command as command
    from bevctl import entry
    from bevctl.cli import main

    seen, signature = {}, inspect.signature(command.run_check_ckpt)

    def record(*args, **kwargs):
        seen.update(signature.bind(*args, **kwargs).arguments)
        return 0

    monkeypatch.setattr(command, "run_check_ckpt", record)
    with pytest.raises(SystemExit) as exc:
        main(["check-ckpt", *argv])
    assert exc.value.code == 0
    fast = entry.parse_check_ckpt(argv)
    assert fast == seen


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["e.pth", "--model-confg", "x"], ["a.pth", "b.pth"],
                                  ["e.pth", "--phase"], ["e.pth", "--json=yes"], ["e.pth", "--", "x"]])
def test_fast_entry_leaves_help_and_mistakes_to_typer(argv):
    from bevctl import entry

    assert entry.parse_check_ckpt(argv) is None


def test_fast_entry_runs_the_check_without_typer_or_pydantic(files):
    code = ("import sys\nfrom bevctl.entry import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    print('CODE', exc.code)\n"
            "print('LOADED', sorted(m for m in ('typer', 'pydantic', 'torch') if m in sys.modules))\n")
    argv = ["check-ckpt", str(files["epoch5"]), "--model-config", str(files["task"])]
    result = subprocess.run([sys.executable, "-c", code, *argv, "--expect-missing", "task_gca.*"],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "NO_COLOR": "1"})
    assert "CODE 0" in result.stdout and "LOADED []" in result.stdout, result.stdout + result.stderr
    assert "compatible" in result.stdout
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "NO_COLOR": "1"})
    assert "CODE 1" in result.stdout and "--expect-missing 'task_gca.*'" in result.stdout
    result = subprocess.run([sys.executable, "-c", code, "check-ckpt", str(files["text"]), "--model-config",
                             str(files["task"])], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "NO_COLOR": "1"})
    assert "CODE 2" in result.stdout and "not a checkpoint" in result.stderr and "Traceback" not in result.stderr
