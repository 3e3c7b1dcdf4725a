"""`bevctl watch` on a real demo run of the bundled trainer (slow: a couple of CPU training steps).

Runs once `model/train.py` is committed (or with BEVCTL_TEST_TRAINER=1 while it is being written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli


def _trainer_available() -> bool:
    if not (ROOT / "model" / "train.py").exists():
        return False
    if os.environ.get("BEVCTL_TEST_TRAINER") == "1":
        return True
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "model/train.py"], cwd=ROOT,
                             capture_output=True, check=False)
    return tracked.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not _trainer_available(), reason="the trainer (model/train.py) has not landed")
def test_watch_a_real_demo_run(tmp_path):
    pytest.importorskip("torch")
    run = tmp_path / "runs" / "demo-run"
    env = dict(os.environ)
    try:
        import wandb  # noqa: F401 - optional: when installed, the W&B mirror is checked too (offline)
        env.update(BEVCTL_WANDB="1", WANDB_MODE="offline", WANDB_SILENT="true")
        with_wandb = True
    except ImportError:
        with_wandb = False
    train = subprocess.run(
        [sys.executable, "-m", "model.train", "--phase", "demo", "--set", "train.epochs=1",
         "--set", "train.max_iters_per_epoch=2", "--set", "train.log_interval=1", "--set", "train.eval_interval=0",
         "--set", f"data.root={tmp_path / 'data'}", "--run-dir", str(run)],
        cwd=ROOT, capture_output=True, text=True, timeout=840, env=env,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    result = run_cli("watch", "--runs-root", str(tmp_path / "runs"), "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo-run" in result.stdout and "task-specific GCA" in result.stdout
    snap = json.loads(run_cli("watch", str(run), "--json").stdout)["runs"][0]
    assert snap["run"]["status"] == "finished" and snap["ok"]
    assert snap["metrics"]["loss"]["count"] == 2 and snap["progress"]["iter"] == 2
    checks = {row["check"]: row for row in snap["verification"]}
    assert checks["task-specific GCA"]["status"] == "ok" and checks["losses finite"]["status"] == "ok"
    assert snap["ingest"]["garbage"] == 0
    # the same records in TensorBoard (bevctl.observe through the trainer's sink), step = global_step
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    losses = [(e["global_step"], e["loss"]) for e in events if e["kind"] == "train"]
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(s, pytest.approx(v, rel=1e-6)) for s, v in losses]
    assert "loss/map/divider/dice" in acc.Tags()["scalars"]
    if with_wandb:  # `start --wandb` / BEVCTL_WANDB=1: the same records in an offline W&B run under the run folder
        files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
        assert files and b"loss/map/divider/dice" in files[0].read_bytes()
        assert "mirror switched off" not in next(run.glob("*.log")).read_text()
