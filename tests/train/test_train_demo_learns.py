"""The whole demo phase (about 5 minutes on 2 cores): the tiny BEVFusion with task GCA learns on synthetic data.

Loss falls, and detection mAP and map mIoU on the synthetic val split end above those of the untrained model
(the same seed's initial weights, evaluated by the same code). One thread makes the run reproducible.
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
SYNTH = ROOT / "data" / "nuscenes-synth"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_demo_phase_beats_the_untrained_model(tmp_path):
    run = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "model.train", "--phase", "demo", "--run-dir", str(run),
                           "--set", f"data.root={SYNTH}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]

    from model.bevfusion import build_model
    from model.config import get_config
    from model.train import seed_all

    seed_all(0)  # the trainer's seed before it builds the model: the run's initial weights
    untrained = build_model(get_config("tiny", gca="task"))
    torch.save({"meta": {"epoch": 0}, "state_dict": untrained.state_dict()}, tmp_path / "untrained.pth")
    base = subprocess.run([sys.executable, "-m", "model.evaluate", "--run-dir", str(run), "--checkpoint",
                           str(tmp_path / "untrained.pth"), "--json"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert base.returncode == 0, base.stderr[-3000:]
    before = json.loads(base.stdout)["metrics"]

    events = runs.read_events(run / runs.EVENTS)
    train = [e for e in events if e["kind"] == "train"]
    after = [e for e in events if e["kind"] == "val"][-1]
    assert train[-1]["loss"] < 0.1 * train[0]["loss"]
    assert after["object/map"] > before["object/map"], (before["object/map"], after["object/map"])
    assert after["map/mean/iou@max"] > before["map/mean/iou@max"], (before["map/mean/iou@max"], after["map/mean/iou@max"])
