"""The trainer's machinery with a small stand-in model (seconds, no spconv): schedule, checkpoints, partial load,
RNG state, and real processes for SIGTERM + resume equality, kill -9 during saves, the NaN guard and torchrun.

Run as a script, this file is the trainer with the stand-in: `python tests/train/test_train_loop.py --run-dir DIR ...`.
Env knobs for the stand-in (test-only): STANDIN_NAN_FROM (forward call from which the loss is NaN),
STANDIN_STEP_SLEEP (seconds per forward), STANDIN_GCA_DIM (a different GCA width: a shape mismatch).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bevctl import runs  # noqa: E402
from model import checkpoint as ckpt  # noqa: E402
from model.schedule import LRSchedule, ScheduleSpec, lr_at  # noqa: E402

MAP_CLASSES = ("drivable_area", "divider")


# --------------------------------------------------------------------------------------------- the stand-in


class StandIn(nn.Module):
    """Module names of the real model (so keys group the same), a GCA per task when asked, random-ish data."""

    def __init__(self, gca: str):
        super().__init__()
        width = int(os.environ.get("STANDIN_GCA_DIM", "256"))
        self.encoders = nn.ModuleDict({"camera": nn.ModuleDict({"backbone": nn.Linear(8, 16)})})
        self.fuser = nn.Linear(16, 16)
        self.decoder = nn.ModuleDict({"backbone": nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.1))})
        if gca == "task":
            # 256 x 512 = 131,072 weights per task, the seed's count
            self.task_gca = nn.ModuleDict({t: nn.Linear(width, 512, bias=False) for t in ("object", "map")})
        self.heads = nn.ModuleDict({"object": nn.Linear(16, 1), "map": nn.Linear(16, len(MAP_CLASSES))})
        self.calls = 0
        self.nan_from = int(os.environ.get("STANDIN_NAN_FROM", "0"))
        self.sleep = float(os.environ.get("STANDIN_STEP_SLEEP", "0"))

    def gca_params(self) -> dict[str, int]:
        if not hasattr(self, "task_gca"):
            return {}
        return {t: sum(p.numel() for p in m.parameters()) for t, m in self.task_gca.items()}

    def forward(self, batch):
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
        h = self.decoder["backbone"](torch.relu(self.fuser(self.encoders["camera"]["backbone"](batch["x"]))))
        obj = self.heads["object"](h).squeeze(-1)
        seg = self.heads["map"](h)
        if hasattr(self, "task_gca"):  # used, so DDP sees gradients for it
            obj = obj + 0 * self.task_gca["object"].weight.sum()
            seg = seg + 0 * self.task_gca["map"].weight.sum()
        out = {
            "loss/object/loss_heatmap": ((obj - batch["y"]) ** 2).mean(),
            "stats/object/matched_ious": torch.rand(()),  # draws from the torch RNG: resume must restore it
        }
        for c, name in enumerate(MAP_CLASSES):
            out[f"loss/map/{name}/dice"] = ((seg[:, c] - batch["y"]) ** 2).mean() * 0.5
        if self.nan_from and self.calls >= self.nan_from:
            out["loss/object/loss_heatmap"] = out["loss/object/loss_heatmap"] * float("nan")
        return out


class StandInData(torch.utils.data.Dataset):
    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x[:, :3].sum(-1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        # augmentation noise from numpy and python RNGs: an exact resume must restore both
        import random

        noise = float(np.random.normal(0, 0.01)) + random.uniform(-0.01, 0.01)
        return {"x": self.x[i] + noise, "y": self.y[i]}


def collate(samples):
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}


def standin_parts(phase, info):
    from model.train import Parts

    return Parts(StandIn(phase.model.gca), None, StandInData(), None, collate)


# --------------------------------------------------------------------------------------------- helpers


def trainer(run_dir: Path, *sets: str, phase: str = "demo", env: dict | None = None, **kw) -> subprocess.Popen:
    args = [sys.executable, str(Path(__file__)), "--phase", phase, "--run-dir", str(run_dir)]
    base = ["data.workers=0", "train.eval_interval=0", "train.device=cpu", "train.grace_seconds=30"]
    for s in base + list(sets):
        args += ["--set", s]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def events(run_dir: Path, kind: str | None = None) -> list[dict]:
    evs = runs.read_events(run_dir / runs.EVENTS)
    return [e for e in evs if kind is None or e["kind"] == kind]


def losses(run_dir: Path) -> list[tuple[int, int, float]]:
    return [(e["epoch"], e["iter"], e["loss"]) for e in events(run_dir, "train")]


# --------------------------------------------------------------------------------------------- unit tests


def test_cosine_schedule_warms_up_then_anneals_as_mmcv():
    spec = ScheduleSpec(lr=1.0, total_iters=100, schedule="cosine", warmup_iters=10, warmup_ratio=0.1, min_lr_ratio=0.01)
    assert lr_at(0, spec) == pytest.approx(0.1)
    assert lr_at(5, spec) < lr_at(9, spec) < lr_at(10, spec)
    # mmcv CosineAnnealing per iteration: factor iter / max_iters (never quite the minimum)
    assert lr_at(50, spec) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_at(99, spec) == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * 0.99)) / 2)
    assert all(lr_at(i, spec) >= lr_at(i + 1, spec) for i in range(10, 99))


def test_cosine_by_epoch_changes_once_per_epoch_after_the_warm_up():
    spec = ScheduleSpec(lr=1.0, total_iters=40, schedule="cosine", warmup_iters=3, warmup_ratio=0.5, min_lr_ratio=0.0,
                        by_epoch=True, iters_per_epoch=10)
    assert lr_at(0, spec) == pytest.approx(0.5) and lr_at(3, spec) == pytest.approx(1.0)
    values = [lr_at(i, spec) for i in range(3, 40)]
    assert sorted(set(round(v, 12) for v in values), reverse=True) == pytest.approx(
        [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    assert lr_at(19, spec) == lr_at(10, spec) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_cyclic_schedule_is_mmcvs_cyclic_lr_with_cyclic_momentum():
    from model.schedule import beta1_at

    spec = ScheduleSpec(lr=1.0, total_iters=100, schedule="cyclic", warmup_iters=0, momentum="cyclic")
    values = [lr_at(i, spec) for i in range(100)]
    peak = int(np.argmax(values))
    # CyclicLrUpdaterHook defaults: up for int(0.4 * max_iters) iterations to 10x, then cosine towards 1e-4x
    assert peak == 40 and values[peak] == pytest.approx(10.0)
    assert values[20] == pytest.approx(1 + 9 * (1 - math.cos(math.pi * 0.5)) / 2)
    assert values[99] == pytest.approx(1e-4 + (10 - 1e-4) * (1 + math.cos(math.pi * 59 / 60)) / 2)
    # CyclicMomentumUpdaterHook defaults on AdamW's beta1: 0.9 -> 0.9 * 0.85 / 0.95 (0.805) -> back towards 0.9
    betas = [beta1_at(i, spec) for i in range(100)]
    assert betas[0] == pytest.approx(0.9) and min(betas) == pytest.approx(0.9 * 0.85 / 0.95) == betas[40]
    assert round(min(betas), 3) == 0.805 and int(np.argmin(betas)) == 40
    assert betas[70] == pytest.approx(0.9 * (0.85 / 0.95 + (1 - 0.85 / 0.95) * (1 - math.cos(math.pi * 0.5)) / 2))
    assert 0.899 < betas[99] < 0.9
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    s = LRSchedule(opt, spec)
    for _ in range(40):
        s.step()
    assert opt.param_groups[0]["betas"] == (pytest.approx(0.9 * 0.85 / 0.95), 0.999)
    constant = LRSchedule(torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0), ScheduleSpec(lr=1.0, total_iters=10))
    constant.step()
    assert constant.optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_schedule_state_restores_the_lr():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    s = LRSchedule(opt, ScheduleSpec(lr=1.0, total_iters=50, warmup_iters=5))
    for _ in range(17):
        s.step()
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    s2 = LRSchedule(opt2, ScheduleSpec(lr=1.0, total_iters=50, warmup_iters=5))
    s2.load_state_dict(s.state_dict())
    assert s2.get_lr() == s.get_lr() == pytest.approx(lr_at(17, s.spec))


def test_partial_load_reports_missing_unexpected_mismatched(tmp_path):
    src = StandIn("none").state_dict()
    src = {f"module.{k}": v for k, v in src.items()}
    src["module.old.thing.weight"] = torch.zeros(2)
    torch.save({"state_dict": src, "meta": {"epoch": 5}}, tmp_path / "epoch_5.pth")
    sd = ckpt.extract_state_dict(ckpt.load_file(tmp_path / "epoch_5.pth"))
    assert not any(k.startswith("module.") for k in sd)

    model = StandIn("task")
    report = ckpt.partial_load(model, sd, path="epoch_5.pth", expect_missing=["task_gca.object.*", "task_gca.map.*"])
    assert report.ok
    assert report.missing == ["task_gca.object.weight", "task_gca.map.weight"]
    assert report.unexpected == ["old.thing.weight"]
    lines = report.log_lines()
    assert lines[0] == "load checkpoint from epoch_5.pth"
    assert "The following keys in model are not found in checkpoint: task_gca.object.*, task_gca.map.*" in lines
    event = report.event()
    assert event["missing_globs"] == ["task_gca.object.*", "task_gca.map.*"]
    assert event["groups"]["task_gca.object"]["missing"] == 1
    assert event["groups"]["encoders.camera.backbone"]["matched"] == 2
    assert torch.equal(model.fuser.weight, sd["fuser.weight"])

    strict = ckpt.partial_load(StandIn("task"), sd, path="x", expect_missing=[])
    assert not strict.ok and "task_gca.object.*" in strict.failure()

    sd["fuser.weight"] = torch.zeros(3, 3)
    fresh = StandIn("task")
    before = fresh.fuser.weight.clone()
    bad = ckpt.partial_load(fresh, sd, path="x", expect_missing=["task_gca.*"])
    assert not bad.ok and bad.mismatched[0][0] == "fuser.weight"
    assert "size mismatch for fuser.weight" in "\n".join(bad.log_lines())
    assert torch.equal(fresh.fuser.weight, before), "nothing is copied from a checkpoint that does not fit"


def test_pretrained_prefix_load(tmp_path):
    backbone = nn.Linear(8, 16)
    model = StandIn("none")
    report = ckpt.partial_load(model, backbone.state_dict(), path="swint.pth", how="pretrained:encoders.camera.backbone",
                               prefix="encoders.camera.backbone")
    assert report.ok and len(report.matched) == 2 and not report.missing
    assert torch.equal(model.encoders["camera"]["backbone"].weight, backbone.weight)


def test_rng_state_round_trips_through_weights_only(tmp_path):
    import random

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.normal(size=3)  # leave numpy with a cached gaussian
    state = ckpt.rng_state()
    ckpt.save_file({"rng": [state]}, tmp_path / "r.pth")
    expected = (torch.rand(3), np.random.normal(size=3), random.random())
    loaded = torch.load(tmp_path / "r.pth", weights_only=True)["rng"][0]
    ckpt.set_rng_state(loaded)
    got = (torch.rand(3), np.random.normal(size=3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_run_checkpoints_keep_max_and_latest_is_a_real_file(tmp_path):
    for epoch in range(1, 5):
        ckpt.save_run_checkpoint(tmp_path, {"meta": {"epoch": epoch}, "state_dict": {}}, epoch, max_keep=2)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_3.pth", "epoch_4.pth", "latest.pth"]
    latest = tmp_path / runs.LATEST
    assert not latest.is_symlink()
    assert torch.load(latest, weights_only=True)["meta"]["epoch"] == 4
    ckpt.save_run_checkpoint(tmp_path, {"meta": {"epoch": 4, "iter": 3}}, None, max_keep=2)  # mid-epoch save
    assert torch.load(tmp_path / "epoch_4.pth", weights_only=True)["meta"] == {"epoch": 4}, "epoch file untouched"
    assert torch.load(latest, weights_only=True)["meta"]["iter"] == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_unreadable_checkpoint_is_one_clear_error(tmp_path):
    from bevctl.errors import UsageError

    (tmp_path / "torn.pth").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UsageError, match="cannot be read safely"):
        ckpt.load_file(tmp_path / "torn.pth")
    with pytest.raises(UsageError, match="not found"):
        ckpt.load_file(tmp_path / "nope.pth")


# --------------------------------------------------------------------------------------------- processes


def test_run_writes_the_contract(tmp_path):
    run = tmp_path / "run"
    code, out, err = finish(trainer(run, "train.epochs=2", "train.batch_size=2", "train.log_interval=2",
                                    "train.max_keep=1"))
    assert code == 0, err
    manifest = runs.read_manifest(run)
    assert manifest["status"] == "finished" and manifest["exit_code"] == 0 and manifest["ended_at"]
    kinds = [e["kind"] for e in events(run)]
    assert kinds[0] == "gca_enabled" and "run_start" in kinds and kinds[-1] == "run_end"
    assert kinds.count("checkpoint_saved") == 2
    train = events(run, "train")
    first = train[0]
    for key in runs.TRAIN_FIELDS + ("grad_norm", "loss", "loss/map/divider/dice", "stats/object/matched_ious"):
        assert key in first, key
    assert first["iters_per_epoch"] == 6 and first["iter"] == 2 and first["global_step"] == 2
    assert train[-1]["global_step"] == 12
    assert sorted(p.name for p in run.glob("*.pth")) == ["epoch_2.pth", "latest.pth"]
    log = next(run.glob("*.log")).read_text()
    for line in ("[BEVFusion] ✨✨ Task-specific GCA mode enabled ✨✨", "[object] GCA: params: 131,072",
                 "[map] GCA: params: 131,072", "Total: 262,144"):
        assert f" - bevctl - INFO - {line}\n" in log
    assert "Epoch [1][2/6]\tlr: " in log and "loss/map/divider/dice: " in log
    ck = torch.load(run / "latest.pth", weights_only=True)
    assert set(ck) == {"meta", "state_dict", "optimizer", "scheduler", "scaler", "rng", "data_state"}
    assert ck["meta"]["epoch"] == 2 and ck["meta"]["global_step"] == 12


@pytest.mark.slow
def test_load_from_reports_task_gca_missing_and_trains(tmp_path):
    p3 = tmp_path / "p3"
    assert finish(trainer(p3, "model.gca=none", "train.epochs=1"))[0] == 0
    assert not [e for e in events(p3) if e["kind"] == "gca_enabled"]
    p4 = tmp_path / "p4"
    code, _, err = finish(trainer(p4, f"load_from={p3}/epoch_1.pth", "expect_missing=[task_gca.object.*, task_gca.map.*]",
                                  "train.epochs=1"))
    assert code == 0, err
    loaded = events(p4, "checkpoint_loaded")[0]
    assert loaded["how"] == "load_from" and loaded["ok"] and loaded["missing_globs"] == ["task_gca.object.*", "task_gca.map.*"]
    log = next(p4.glob("*.log")).read_text()
    assert f"load checkpoint from {p3}/epoch_1.pth" in log
    assert "The following keys in model are not found in checkpoint: task_gca.object.*, task_gca.map.*" in log
    assert events(p4, "train")

    # Not expected to be missing, or a different shape: the run stops before training, one line, exit 2.
    for source, extra, env, words in ((f"{p3}/epoch_1.pth", [], {}, "not in expect_missing"),
                                      (f"{p4}/latest.pth", ["expect_missing=[task_gca.*]"], {"STANDIN_GCA_DIM": "128"},
                                       "shape mismatch")):
        bad = tmp_path / f"bad{len(extra)}"
        code, out, err = finish(trainer(bad, f"load_from={source}", *extra, env=env))
        assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
        assert words in err
        assert not events(bad, "train") and events(bad, "run_end")[-1]["status"] == "failed"
        assert runs.read_manifest(bad)["status"] == "failed"


@pytest.mark.slow
def test_pretrained_module_file_and_skip_when_load_from_covers_it(tmp_path):
    backbone = nn.Linear(8, 16)
    torch.save({"state_dict": backbone.state_dict()}, tmp_path / "swint.pth")
    run = tmp_path / "pre"
    code, _, err = finish(trainer(run, f"pretrained={{encoders.camera.backbone: {tmp_path}/swint.pth}}", "train.epochs=1"))
    assert code == 0, err
    loaded = events(run, "checkpoint_loaded")[0]
    assert loaded["how"] == "pretrained:encoders.camera.backbone" and loaded["matched"] == 2 and loaded["ok"]

    # The seed's fix 2: with load_from covering the backbone, a missing pretrained file does not matter.
    covered = tmp_path / "covered"
    code, _, err = finish(trainer(covered, f"load_from={run}/epoch_1.pth",
                                  "pretrained={encoders.camera.backbone: pretrained/swint-nuimages-pretrained.pth}",
                                  "train.epochs=1"))
    assert code == 0, err
    assert [e["how"] for e in events(covered, "checkpoint_loaded")] == ["load_from"]
    log = next(covered.glob("*.log")).read_text()
    assert "pretrained encoders.camera.backbone: skipped pretrained/swint-nuimages-pretrained.pth" in log


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sigterm_then_resume_gives_the_same_losses(tmp_path):
    sets = ("train.epochs=2", "train.log_interval=1", "resume=auto", "optim.warmup_iters=3")
    whole = tmp_path / "whole"
    assert finish(trainer(whole, *sets))[0] == 0

    cut = tmp_path / "cut"
    proc = trainer(cut, *sets, env={"STANDIN_STEP_SLEEP": "0.2"})
    _wait_for(lambda: len(events(cut, "train")) >= 3)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 0, err
    end = events(cut, "run_end")[-1]
    assert end["status"] == "stopped" and runs.read_manifest(cut)["status"] == "stopped"
    saved = events(cut, "checkpoint_saved")[-1]
    assert saved["reason"] == "signal" and 3 <= saved["iter"] < 6
    assert finish(trainer(cut, *sets))[0] == 0
    assert losses(cut) == losses(whole)
    assert runs.read_manifest(cut)["status"] == "finished"
    start = events(cut, "run_start")[-1]
    assert start["start_epoch"] == 1 and start["start_iter"] == saved["iter"]


@pytest.mark.slow
def test_a_step_longer_than_the_grace_period_ends_the_run_as_failed(tmp_path):
    run = tmp_path / "run"
    proc = trainer(run, "train.grace_seconds=1", "train.log_interval=1", env={"STANDIN_STEP_SLEEP": "4"})
    _wait_for(lambda: len(events(run, "train")) >= 1)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, timeout=30)
    assert code == 1, err
    end = events(run, "run_end")[-1]
    assert end["status"] == "failed" and "grace_seconds=1" in end["message"]


SAVER = r"""
import sys, torch
from model import checkpoint as ckpt
run_dir = sys.argv[1]
big = {"state_dict": {"w": torch.randn(64, 1024, 1024)}}  # 256 MB
epoch = 0
while True:
    epoch += 1
    big["meta"] = {"epoch": epoch}
    print("saving", epoch, flush=True)
    ckpt.save_run_checkpoint(run_dir, big, epoch, max_keep=1)
"""


@pytest.mark.slow
def test_kill_9_during_saves_never_tears_latest(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rng = np.random.default_rng(0)
    seen = []
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().startswith("saving")
        if attempt:  # mid-save: the file is being written now
            time.sleep(float(rng.uniform(0.05, 0.6)))
        else:
            proc.stdout.readline()  # let one save complete first
            time.sleep(0.1)
        proc.kill()
        proc.wait()
        latest = run / "latest.pth"
        assert latest.is_file() and not latest.is_symlink()
        meta = torch.load(latest, map_location="cpu", weights_only=True)["meta"]
        seen.append(meta["epoch"])
    assert seen[0] >= 1
    ckpt.remove_stale_temps(run)  # what a kill left behind is cleaned by the next trainer start
    assert not list(run.glob(".*.tmp"))


def test_nonfinite_loss_stops_after_the_limit(tmp_path):
    run = tmp_path / "run"
    code, _, err = finish(trainer(run, "train.nonfinite_limit=3", "train.log_interval=1", env={"STANDIN_NAN_FROM": "4"}))
    assert code == 1, err
    assert len(events(run, "train")) == 3
    alert = events(run, "alert")[-1]
    assert alert["level"] == "error" and "non-finite" in alert["message"]
    assert events(run, "checkpoint_saved")[-1]["reason"] == "nonfinite"
    assert math.isfinite(float(torch.load(run / "latest.pth", weights_only=True)["state_dict"]["fuser.weight"].sum()))
    assert events(run, "run_end")[-1]["status"] == "failed" and runs.read_manifest(run)["exit_code"] == 1
    log = next(run.glob("*.log")).read_text()
    assert "non-finite loss/grad (3 in a row)" in log


@pytest.mark.slow
def test_fp16_and_bf16_run(tmp_path):
    for precision in ("bf16", "fp16"):
        run = tmp_path / precision
        code, _, err = finish(trainer(run, f"train.precision={precision}", "train.epochs=1"))
        assert code == 0, err
        assert events(run, "run_start")[0]["precision"] == precision
        assert torch.load(run / "latest.pth", weights_only=True)["scaler"] is not None


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            str(Path(__file__)), "--phase", "demo", "--run-dir", str(run)]
    for s in ("data.workers=0", "train.eval_interval=0", "train.device=cpu", "train.epochs=1", "train.log_interval=1",
              "train.batch_size=2"):
        args += ["--set", s]
    proc = subprocess.run(args, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = events(run, "run_start")[0]
    assert start["world_size"] == 2
    train = events(run, "train")
    assert len(train) == 3 and train[-1]["iters_per_epoch"] == 3  # 12 samples / (2 ranks x batch 2)
    assert len(events(run, "run_end")) == 1, "rank 0 only"
    assert runs.read_manifest(run)["status"] == "finished"



@pytest.mark.slow
def test_torchrun_sigterm_stops_every_rank_at_the_same_step(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            str(Path(__file__)), "--phase", "demo", "--run-dir", str(run)]
    for s in ("data.workers=0", "train.eval_interval=0", "train.device=cpu", "train.epochs=3", "train.log_interval=1",
              "train.batch_size=1"):
        args += ["--set", s]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "STANDIN_STEP_SLEEP": "0.3"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(events(run, "train")) >= 2, timeout=120)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both workers
    proc.communicate(timeout=120)
    end = events(run, "run_end")
    assert len(end) == 1 and end[0]["status"] == "stopped", end
    saved = events(run, "checkpoint_saved")[-1]
    ck = torch.load(run / "latest.pth", weights_only=True)
    assert len(ck["rng"]) == 2, "every rank's RNG state is kept"
    if saved["iter"] < 6:  # mid-epoch; a signal in an epoch's last step saves the epoch checkpoint instead
        assert saved["reason"] == "signal" and ck["data_state"]["samples_done"] == saved["iter"] * 2


if __name__ == "__main__":
    from model.train import main

    sys.exit(main(parts_builder=standin_parts))
