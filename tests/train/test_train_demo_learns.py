"""The project's proof that the bundled model learns: the demo phase as shipped (tiny BEVFusion with task GCA on
the synthetic nuScenes-format data, two CPU processes), started the way `make demo` starts it, gets better at both
tasks across its evaluations (nuScenes devkit mAP; map mean IoU at the best threshold).

Map: issue 14's goal is mIoU >= 0.40; the floor here is the measured level (0.672) with a margin. Detection: the
measured level with a margin, not yet the goal of 0.30: mAP 0.275 as shipped (train.seed 0); seeds 1 and 2 give
0.302 and 0.251, and another CPU's float rounding takes another path much as another seed does, so the floor is
0.22. How long it takes is measured in the README, not here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bevctl import runs
from tests.conftest import ROOT

SYNTH = ROOT / "data" / "nuscenes-synth-trainval"


@pytest.mark.slow
def test_demo_phase_learns_detection_and_map_segmentation(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bevctl", "start", "demo", "--yes", "--local", "--wait",
                           "--name", "demo", "--set", f"run.root={tmp_path}", "--set", f"data.root={SYNTH}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = tmp_path / "demo"

    events = runs.read_events(run / runs.EVENTS)
    assert next(e for e in events if e["kind"] == "run_start")["world_size"] == 2
    train = [e for e in events if e["kind"] == "train"]
    val = [e for e in events if e["kind"] == "val"]
    assert len(val) >= 2, "the demo evaluates more than once"
    maps = [v["object/map"] for v in val]
    ious = [v["map/mean/iou@max"] for v in val]
    assert maps[-1] >= 0.22, maps
    assert ious[-1] >= 0.60, ious
    # rising: the last evaluation beats the first and is not a collapse from an earlier best
    assert maps[-1] > 1.3 * maps[0] and maps[-1] >= 0.9 * max(maps), maps
    assert ious[-1] > ious[0] and ious[-1] >= 0.95 * max(ious), ious
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
