"""The project's proof that the bundled model learns: the demo phase as shipped (tiny BEVFusion with task GCA on
the synthetic nuScenes-format data, two CPU processes), started the way `make demo` starts it, gets better at both
tasks across its evaluations (nuScenes devkit mAP; map mean IoU at the best threshold).

Detection is held to issue 14's goal, mAP >= 0.30; map segmentation to mIoU >= 0.60, above the goal of 0.40.
As shipped (train.seed 0) the demo measures mAP 0.313 and mIoU 0.725 on the 2-core development machine, the same
figures on every run there. Training seeds 1 and 2 give mAP 0.321 and 0.297: a CPU whose float rounding takes
another path lands where another seed does, so on such a machine the detection floor can fail while the model
learns as well. How long the demo takes is measured in the README, not here.
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
    assert maps[-1] >= 0.30, maps
    assert ious[-1] >= 0.60, ious
    # rising: the last evaluation beats the first and is not a collapse from an earlier best
    assert maps[-1] > 1.3 * maps[0] and maps[-1] >= 0.9 * max(maps), maps
    assert ious[-1] > ious[0] and ious[-1] >= 0.95 * max(ious), ious
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
