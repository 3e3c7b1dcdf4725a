"""`bevctl start / runs / stop` through the real parts: the CLI, the supervisor, the trainer, a Docker engine."""

import json
import math
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.launch.common import FAST, events, runs_json, wait_status
from tests.helpers.docker_engine import bevctl_test_image, docker_base, docker_engine  # noqa: F401  (fixtures)



@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "nuscenes-synth"
    result = run_cli("data", "synth", "--out", str(root), "--version", "v1.0-trainval", "--scenes", "10", "--samples-per-scene", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.slow
def test_start_returns_at_once_and_runs_shows_running_then_finished(tmp_path, synth):
    result = run_cli("start", "demo", "--yes", "--local", "--name", "d1", "--set", f"data.root={synth}",
                     "--set", "train.epochs=2", "--set", "train.max_iters_per_epoch=2", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "started run d1" in result.stderr and "bevctl watch d1" in result.stderr
    info, seen = wait_status(tmp_path, "d1", ("finished", "failed", "crashed"), timeout=400)
    assert info["status"] == "finished", (info, (tmp_path / "runs/d1/console.out").read_text()[-2000:])
    assert "running" in seen
    run_dir = tmp_path / "runs" / "d1"
    for artefact in ("run.json", "events.jsonl", "epoch_2.pth", "latest.pth"):
        assert (run_dir / artefact).is_file(), artefact
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["exit_code"] == 0 and manifest["where"] == "local" and manifest["pid"]
    assert (info["epoch"], info["iter"]) == (2, 2)


@pytest.mark.slow
def test_stop_leaves_a_resumable_checkpoint_and_resume_auto_continues(tmp_path, synth):
    common = ["--local", "--name", "d2", "--set", f"data.root={synth}", "--set", "train.epochs=2",
              "--set", "train.max_iters_per_epoch=8", *FAST,
              "--set", "launch.cpu_processes=2"]  # the demo's own launch: stop and resume through torchrun
    assert run_cli("start", "demo", "--yes", *common, cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "runs" / "d2"
    deadline = time.monotonic() + 300
    while not any(e["kind"] == "train" for e in events(run_dir)):
        assert time.monotonic() < deadline, "no train event"
        time.sleep(0.5)
    stopped = run_cli("stop", "d2", "--json", cwd=tmp_path, timeout=200)
    assert stopped.returncode == 0, stopped.stderr
    report = json.loads(stopped.stdout)
    assert report["status"] == "stopped" and report["exit_code"] == 0
    assert report["last_checkpoint"] and (run_dir / "latest.pth").is_file()
    first_steps = [e["global_step"] for e in events(run_dir) if e["kind"] == "train"]

    resumed = run_cli("start", "demo", "--yes", "--resume", "auto", "--wait", *common, cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    starts = [e for e in events(run_dir) if e["kind"] == "run_start"]
    assert len(starts) == 2 and (starts[1]["start_epoch"], starts[1]["start_iter"]) != (1, 0)
    later_steps = [e["global_step"] for e in events(run_dir) if e["kind"] == "train"][len(first_steps):]
    assert later_steps and min(later_steps) > max(first_steps)  # continued, not restarted
    assert runs_json(tmp_path)["d2"]["status"] == "finished"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["previous_attempts"][-1]["status"] == "stopped"


@pytest.mark.slow
def test_seed_flow_phase3_then_phase4a(tmp_path, synth):
    data = ["--set", f"data.root={synth}", "--set", "train.max_iters_per_epoch=2", *FAST]
    phase3 = run_cli("start", "demo-phase3", "--yes", "--local", "--wait", "--set", "train.epochs=1", *data,
                     cwd=tmp_path, timeout=600)
    assert phase3.returncode == 0, phase3.stderr
    assert (tmp_path / "runs/demo-phase3/epoch_1.pth").is_file()

    plan = run_cli("start", "demo-phase4a", "--dry-run", "--json", "--local", "--set", "train.epochs=1", *data,
                   cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    plan = json.loads(plan.stdout)
    load = next(c for c in plan["checks"] if c["label"] == "load_from")
    assert load["status"] == "ok" and "task_gca.object.*" in load["detail"] and "task_gca.map.*" in load["detail"]
    manifest = json.loads((ROOT / "bevctl/manifests/tiny-task.json").read_text())
    gca = {g: sum(math.prod(k["shape"]) for k in manifest["keys"] if k["group"] == g) for g in ("task_gca.object", "task_gca.map")}
    assert plan["new_params"] == gca and all(v > 0 for v in gca.values())

    phase4a = run_cli("start", "demo-phase4a", "--yes", "--local", "--wait", "--set", "train.epochs=1", *data,
                      cwd=tmp_path, timeout=600)
    assert phase4a.returncode == 0, phase4a.stderr
    log = next((tmp_path / "runs/demo-phase4a").glob("2*.log")).read_text()
    assert "The following keys in model are not found in checkpoint: task_gca.object.*, task_gca.map.*" in log
    assert "Task-specific GCA mode enabled" in log and f"Total: {sum(gca.values()):,}" in log


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_with_the_glob_to_add(tmp_path, synth):
    data = ["--set", f"data.root={synth}", "--set", "train.max_iters_per_epoch=1", *FAST]
    assert run_cli("start", "demo-phase3", "--yes", "--local", "--wait", "--set", "train.epochs=1", *data,
                   cwd=tmp_path, timeout=600).returncode == 0
    refused = run_cli("start", "demo-phase4a", "--yes", "--local", "--set", "expect_missing=[]", *data, cwd=tmp_path)
    assert refused.returncode == 1
    assert "add expect_missing: task_gca.*" in refused.stderr
    assert not (tmp_path / "runs/demo-phase4a").exists()


@pytest.mark.docker
@pytest.mark.slow
def test_start_in_a_container_fills_the_host_run_dir(tmp_path, synth, docker_engine, bevctl_test_image):
    env = bevctl_test_image.env
    result = run_cli("start", "demo", "--yes", "--container", "--name", "dc", "--wait",
                     "--set", f"container.image={bevctl_test_image.tag}", "--set", "container.network=none",
                     "--set", f"data.root={synth}", "--set", "train.epochs=1", "--set", "train.max_iters_per_epoch=1",
                     "--set", "launch.cpu_processes=1", *FAST, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "dc"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["where"] == "container" and manifest["container_id"]
    assert manifest["status"] == "finished"
    assert (run_dir / "latest.pth").is_file() and any(e["kind"] == "run_end" for e in events(run_dir))
    listed = runs_json(tmp_path)["dc"]
    assert listed["status"] == "finished" and listed["where"] == "container"

