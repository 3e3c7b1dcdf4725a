"""The trainer with the bundled tiny BEVFusion on synthetic nuScenes: the seed's flow at demo scale.

Reduced settings (1 epoch, a few iterations) keep each run to about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bevctl import runs

ROOT = Path(__file__).resolve().parents[2]
SYNTH = ROOT / "data" / "nuscenes-synth-trainval"  # the demo phases' root; generated once and shared


def train(run_dir: Path, phase: str, *sets: str, timeout: int = 900, torchrun: int = 0,
          threads: int = 2) -> subprocess.CompletedProcess:
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}", "-m", "model.train"]
    else:
        cmd = [sys.executable, "-m", "model.train"]
    cmd += ["--phase", phase, "--run-dir", str(run_dir)]
    for s in ("data.workers=0", f"data.root={SYNTH}", *sets):
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads if not torchrun else 1)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in runs.read_events(run_dir / runs.EVENTS) if e["kind"] == kind]


def test_bad_data_root_is_one_clear_line(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "model.train", "--phase", "demo", "--run-dir", str(run),
           "--set", "data.synthetic=false", "--set", f"data.root={tmp_path / 'nowhere'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: data root") and "does not exist" in lines[0], proc.stderr
    end = events(run, "run_end")[-1]
    assert end["status"] == "failed" and end["exit_code"] == 2
    assert runs.read_manifest(run)["status"] == "failed"


@pytest.mark.slow
def test_phase3_checkpoint_then_phase4a_load_from(tmp_path):
    p3 = tmp_path / "demo-phase3"
    proc = train(p3, "demo-phase3", "train.epochs=1", "train.max_iters_per_epoch=2", "train.eval_interval=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (p3 / "epoch_1.pth").is_file() and (p3 / "latest.pth").is_file()
    assert not events(p3, "gca_enabled")

    p4 = tmp_path / "demo-phase4a"
    # One step and one evaluation (after precise BN on one batch): enough for the shipped bands to be judged.
    proc = train(p4, "demo-phase4a", f"load_from={p3}/epoch_1.pth", "train.epochs=1", "train.max_iters_per_epoch=1",
                 "train.precise_bn_batches=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = events(p4, "checkpoint_loaded")[0]
    assert loaded["ok"] and loaded["how"] == "load_from"
    assert loaded["missing_globs"] == ["task_gca.object.*", "task_gca.map.*"]
    assert all(k.startswith("task_gca.") for k in loaded["missing"]) and not loaded["mismatched"]
    log = "".join(p.read_text() for p in p4.glob("*.log"))
    assert f"load checkpoint from {p3}/epoch_1.pth" in log
    assert "The following keys in model are not found in checkpoint: task_gca.object.*, task_gca.map.*" in log
    assert "[BEVFusion] ✨✨ Task-specific GCA mode enabled ✨✨" in log
    gca = events(p4, "gca_enabled")[0]
    assert "[object] GCA: params: {:,}".format(gca["params"]["object"]) in log
    assert f"Total: {gca['total']:,}" in log
    assert events(p4, "train") and runs.read_manifest(p4)["status"] == "finished"
    # the loaded weights really are phase 3's
    a = torch.load(p3 / "epoch_1.pth", weights_only=True)["state_dict"]
    b = torch.load(p4 / "epoch_1.pth", weights_only=True)["state_dict"]
    assert set(b) - set(a) == {k for k in b if k.startswith("task_gca.")}

    # The demo-scale expectation bands shipped in demo-phase4a.yaml drive watch's band panel for this run.
    from bevctl.phases import load_phase
    from tests.conftest import run_cli

    shipped = {band.metric for band in load_phase("demo-phase4a").expectations}
    assert shipped == {"object/map", "map/mean/iou@max"}
    (val,) = events(p4, "val")
    watch = run_cli("watch", str(p4), "--json")
    snapshot = json.loads(watch.stdout)["runs"][0]
    assert watch.returncode == (0 if snapshot["ok"] else 1), watch.stderr  # a band off track is a failed check
    rows = {r["check"]: r for r in snapshot["verification"] if r["check"].startswith("band ")}
    assert set(rows) == {f"band {m}" for m in shipped}
    for metric in shipped:
        row = rows[f"band {metric}"]
        assert row["status"] in ("ok", "fail") and row["epoch"] == 1 and row["value"] == pytest.approx(val[metric])
        assert row["expected"] == pytest.approx(next(b.start for b in load_phase("demo-phase4a").expectations
                                                     if b.metric == metric))


@pytest.mark.slow
def test_torchrun_gloo_two_processes(tmp_path):
    run = tmp_path / "run"
    proc = train(run, "demo", "train.epochs=1", "train.max_iters_per_epoch=1", "train.eval_interval=0",
                 "train.batch_size=1", torchrun=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert events(run, "run_start")[0]["world_size"] == 2
    assert len(events(run, "train")) == 1 and len(events(run, "run_end")) == 1
    assert runs.read_manifest(run)["status"] == "finished"


@pytest.mark.slow
def test_sigterm_resume_same_losses_with_the_real_model(tmp_path):
    import signal
    import time

    # One thread: some CPU kernels (scatter, bev_pool) sum in a thread-dependent order.
    sets = ("train.epochs=1", "train.max_iters_per_epoch=4", "train.log_interval=1", "train.eval_interval=0", "resume=auto")
    whole = tmp_path / "whole"
    assert train(whole, "demo", *sets, threads=1).returncode == 0
    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "model.train", "--phase", "demo", "--run-dir", str(cut)]
    for s in ("data.workers=0", f"data.root={SYNTH}", *sets):
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600
    # The stop is honoured after the step in flight (2, or 3 on a slow poll): before the epoch's last one, which
    # would end the run as finished instead.
    while not events(cut, "train") and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    assert events(cut, "run_end")[-1]["status"] == "stopped"
    assert 2 <= len(events(cut, "train")) < 4
    assert train(cut, "demo", *sets, threads=1).returncode == 0
    key = lambda e: (e["epoch"], e["iter"], e["loss"])  # noqa: E731
    assert [key(e) for e in events(cut, "train")] == [key(e) for e in events(whole, "train")]


@pytest.mark.slow
def test_demo_trains_evaluates_and_writes_every_artefact(tmp_path):
    """The demo phase, cut to 8 steps: loss falls, the val metrics are there, the run dir holds the contract.

    (Whether mAP / mIoU beat the untrained model needs the whole demo; see the trainer's report in the README.)
    """
    run = tmp_path / "demo"
    # The original's head init (the demo's -2.19 bias starts the loss ~15x lower): the loss halves within 8 steps.
    proc = train(run, "demo", "train.epochs=1", "train.max_iters_per_epoch=8", "train.log_interval=1",
                 "model.heatmap_bias_init=null", "train.precise_bn_batches=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_events = events(run, "train")
    assert len(train_events) == 8 and [e["global_step"] for e in train_events] == list(range(1, 9))
    assert train_events[-1]["loss"] < 0.5 * train_events[0]["loss"]
    for key in ("loss/object/loss_heatmap", "loss/object/layer_-1_loss_cls", "loss/object/layer_-1_loss_bbox",
                "stats/object/matched_ious", "loss/map/divider/dice", "loss/map/divider/focal", "grad_norm", "lr",
                "step_time", "data_time", "memory"):
        assert key in train_events[0], key
    (val,) = events(run, "val")
    for key in ("object/map", "object/nds", "object/car_ap_dist_0.5", "object/car_trans_err", "object/mATE",
                "map/divider/iou@0.35", "map/divider/iou@max", "map/mean/iou@max"):
        assert key in val, key
    kinds = {e["kind"] for e in runs.read_events(run / runs.EVENTS)}
    assert kinds == {"run_start", "gca_enabled", "train", "val", "checkpoint_saved", "run_end"}
    manifest = runs.read_manifest(run)
    assert manifest["status"] == "finished" and manifest["exit_code"] == 0 and manifest["config"]["name"] == "demo"
    names = {p.name for p in run.iterdir()}
    assert {"run.json", "events.jsonl", "epoch_1.pth", "latest.pth", "eval"} <= names
    log = next(run.glob("*.log")).read_text()
    assert "Epoch [1][8/8]\tlr: " in log and "Epoch(val) [1][" in log and "map/mean/iou@max" in log
    assert (run / "eval" / "results_nusc.json").is_file()
    ck = torch.load(run / "latest.pth", weights_only=True)
    assert ck["meta"]["epoch"] == 1 and ck["meta"]["global_step"] == 8 and ck["meta"]["gca"] == "task"
