"""Hostile phase files, names and paths reaching bevctl through its other doors: doctor, check-ckpt, watch,
stop, the container launch and the trainer's own command line. What the user sees must be the same as through
`bevctl start`: one line with a fix, the right exit code, nothing changed."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.safety.hostile import Snapshot, expect_refusal, hostile
from tests.safety.test_hostile_phases import LOL


@pytest.fixture
def phases(tmp_path):
    """Three broken phase files: a billion laughs, a duplicated section, a Latin-1 byte."""
    (tmp_path / "laughs.yaml").write_text(LOL)
    (tmp_path / "dup.yaml").write_text("model: {config: tiny}\ntrain: {epochs: 1}\ntrain: {epochs: 2}\n")
    (tmp_path / "latin1.yaml").write_bytes(b"description: na\xefve\n")
    return tmp_path


def test_doctor_refuses_a_billion_laughs_phase(phases):
    hostile("doctor", "--phase", str(phases / "laughs.yaml"), cwd=phases, says=["laughs.yaml:", "expand to more than"],
            within=30)


def test_check_ckpt_refuses_a_phase_with_a_duplicate_section(phases):
    (phases / "w.pth").write_bytes(b"PK")  # never reached: the phase is refused first
    hostile("check-ckpt", str(phases / "w.pth"), "--phase", str(phases / "dup.yaml"), cwd=phases,
            says=["dup.yaml:3", "duplicate key 'train'", "first at line 2"])


def test_watch_refuses_a_phase_that_is_not_utf8(phases):
    hostile("watch", "--once", "--phase", str(phases / "latin1.yaml"), cwd=phases,
            says=["latin1.yaml:1", "byte 0xef at offset 15 is not UTF-8"])


def test_empty_host_part_in_extra_mounts_never_mounts_the_checkout(tmp_path):
    hostile("start", "demo", "--container", "--yes", "--dry-run", cwd=tmp_path, env={"BEVCTL_EXTRA_MOUNTS": ":/x"},
            says=["BEVCTL_EXTRA_MOUNTS", "empty host path"])


def test_missing_host_path_in_extra_mounts(tmp_path):
    hostile("start", "demo", "--container", "--yes", "--dry-run", cwd=tmp_path,
            env={"BEVCTL_EXTRA_MOUNTS": f"{tmp_path}/absent:/weights:ro"}, says=["does not exist"])


def _trainer(*args, cwd):
    return subprocess.run([sys.executable, "-m", "model.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})


@pytest.mark.slow
def test_trainer_command_line_refuses_a_billion_laughs_phase(phases):
    pytest.importorskip("torch")
    snap = Snapshot.take(phases)
    result = _trainer("--phase", str(phases / "laughs.yaml"), "--run-dir", str(phases / "run"), cwd=ROOT)
    expect_refusal(result, 2, ["laughs.yaml:", "expand to more than"], lines=None)
    snap.assert_unchanged()


@pytest.mark.slow
def test_trainer_refuses_a_recorded_config_with_a_non_finite_lr(tmp_path):
    """A run.json edited by hand (or damaged): the trainer stops with one line naming the field, run.json kept."""
    pytest.importorskip("torch")
    from bevctl.phases import load_phase

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = load_phase("demo").model_dump(mode="json")
    config["optim"]["lr"] = float("inf")
    (run_dir / "run.json").write_text(json.dumps({"schema": 1, "name": "run", "phase": "demo", "status": "created",
                                                  "config": config}))
    result = _trainer("--run-dir", str(run_dir), cwd=ROOT)
    expect_refusal(result, 2, ["optim.lr", "finite number"], lines=None)
    assert json.loads((run_dir / "run.json").read_text())["config"] == config  # the status may say failed



@pytest.mark.parametrize("name", ["a\nb", "outside"])
def test_stop_with_a_name_that_is_no_run(tmp_path, name):
    (tmp_path / "runs").mkdir()
    (tmp_path / "outside").mkdir()
    hostile("stop", name, cwd=tmp_path, says=["no run named"])


@pytest.mark.slow
@pytest.mark.parametrize("body, says", [
    ("base: tiny\nbase: full\n", ["model.yaml:2", "duplicate key 'base'", "first at line 1"]),
    (LOL.replace("description:", "object_classes:"), ["model.yaml:", "expand to more than"]),
])
def test_trainer_refuses_a_hostile_model_config_yaml(tmp_path, body, says):
    """`model.config` may name a model-config YAML: it is read with the same limits as a phase file."""
    pytest.importorskip("torch")
    (tmp_path / "model.yaml").write_text(body)
    snap = Snapshot.take(tmp_path)
    result = _trainer("--phase", "demo", "--set", f"model.config={tmp_path / 'model.yaml'}", "--set",
                      f"data.root={tmp_path / 'data'}", "--run-dir", str(tmp_path / "run"), cwd=ROOT)
    expect_refusal(result, 2, says, lines=None)
    snap.assert_unchanged()
