"""`bevctl start` refuses before anything starts, with one line, the fix and the right exit code."""

import json
import subprocess
import sys
import textwrap

from bevctl import runs
from bevctl.trainer import trainer_command
from tests.conftest import run_cli


def _no_traceback(result):
    assert "Traceback" not in result.stderr + result.stdout


def test_unknown_phase(tmp_path):
    result = run_cli("start", "no-such-phase", "--yes", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown phase 'no-such-phase'" in result.stderr
    _no_traceback(result)


def test_bad_override(tmp_path):
    result = run_cli("start", "demo", "--set", "train.epochs=many", "--yes", cwd=tmp_path)
    assert result.returncode == 2
    assert "train.epochs" in result.stderr
    _no_traceback(result)
    result = run_cli("start", "demo", "--set", "train.epoks=3", "--yes", cwd=tmp_path)
    assert result.returncode == 2 and "did you mean 'epochs'" in result.stderr


def test_no_tty_without_yes(tmp_path):
    result = run_cli("start", "demo", "--local", cwd=tmp_path, input="")
    assert result.returncode == 2
    assert "pass --yes" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_existing_run_dir_is_not_clobbered(tmp_path):
    existing = tmp_path / "runs" / "mine"
    existing.mkdir(parents=True)
    (existing / "epoch_1.pth").write_bytes(b"precious")
    result = run_cli("start", "demo", "--local", "--name", "mine", "--yes", cwd=tmp_path)
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and "--resume auto" in result.stderr
    assert (existing / "epoch_1.pth").read_bytes() == b"precious"


def test_missing_load_from_and_pretrained(tmp_path):
    phase = tmp_path / "p.yaml"
    phase.write_text(textwrap.dedent("""\
        model: {config: tiny, gca: task}
        data: {root: data/nuscenes-synth, version: v1.0-mini, synthetic: true}
        load_from: runs/phase3/epoch_5.pth
        pretrained: {encoders.camera.backbone: pretrained/swint-nuimages-pretrained.pth}
        launch: {gpus: 0, where: local}
        """))
    result = run_cli("start", str(phase), "--yes", "--dry-run", cwd=tmp_path)
    assert result.returncode == 1
    assert "runs/phase3/epoch_5.pth not found" in result.stderr
    assert "swint-nuimages-pretrained.pth" in result.stderr
    _no_traceback(result)


def test_missing_real_data_root(tmp_path):
    result = run_cli("start", "demo", "--local", "--set", "data.synthetic=false", "--set", "data.root=nowhere",
                     "--yes", "--dry-run", cwd=tmp_path)
    assert result.returncode == 1
    assert "nowhere holds no v1.0-trainval tables" in result.stderr


def test_resume_auto_without_checkpoint(tmp_path):
    result = run_cli("start", "demo-phase3", "--local", "--resume", "auto", "--yes", cwd=tmp_path)
    assert result.returncode == 2
    assert "found no latest.pth" in result.stderr


def test_dry_run_json_plan(tmp_path):
    result = run_cli("start", "demo", "--local", "--dry-run", "--json", "--name", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["schema"] == 1 and plan["run"] == "x" and plan["started"] is False
    assert plan["command"][-4:] == ["-m", "model.train", "--run-dir", "runs/x"]
    assert plan["model"] == {"config": "tiny", "gca": "task", "heads": ["object", "map"]}
    assert not (tmp_path / "runs").exists()


def test_cpu_phase_runs_its_cpu_processes_under_torchrun(tmp_path):
    """The demo trains as 2 one-thread CPU processes; launch.cpu_processes=1 is one plain process."""
    result = run_cli("start", "demo", "--local", "--dry-run", "--json", "--name", "x", cwd=tmp_path)
    plan = json.loads(result.stdout)
    assert plan["nproc_per_node"] == 2
    assert "--nproc-per-node=2" in plan["command"] and "--standalone" in plan["command"]
    one = json.loads(run_cli("start", "demo", "--local", "--dry-run", "--json", "--name", "y",
                             "--set", "launch.cpu_processes=1", cwd=tmp_path).stdout)
    assert one["nproc_per_node"] == 1 and "torch.distributed.run" not in " ".join(one["command"])
    shown = run_cli("start", "demo", "--local", "--dry-run", "--name", "z", cwd=tmp_path, env={"COLUMNS": "200"})
    assert "2 CPU process(es)/node" in shown.stdout + shown.stderr
    bad = run_cli("start", "demo", "--local", "--dry-run", "--set", "launch.cpu_processes=0", cwd=tmp_path)
    assert bad.returncode == 2 and "cpu_processes" in bad.stderr and "Traceback" not in bad.stderr


def test_multinode_needs_rendezvous(tmp_path):
    result = run_cli("start", "demo", "--local", "--nnodes", "2", "--dry-run", cwd=tmp_path)
    assert result.returncode == 2 and "--rdzv-endpoint" in result.stderr


def test_torchrun_command_per_node():
    from bevctl.phases import load_phase

    phase = load_phase("phase4a", ["launch.nnodes=2", "launch.node_rank=1", "launch.rdzv_endpoint=10.0.0.1:29400"])
    cmd = trainer_command(phase, "runs/x", 8, python="python")
    assert cmd[:3] == ["python", "-m", "torch.distributed.run"]
    assert "--nproc-per-node=8" in cmd and "--nnodes=2" in cmd and "--node-rank=1" in cmd
    assert "--rdzv-endpoint=10.0.0.1:29400" in cmd and "--standalone" not in cmd
    assert cmd[-4:] == ["-m", "model.train", "--run-dir", "runs/x"]
    single = trainer_command(load_phase("demo"), "runs/y", 1, python="python")
    assert single == ["python", "-m", "model.train", "--run-dir", "runs/y"]


def test_supervisor_records_a_crash_and_runs_shows_it(tmp_path):
    run_dir = tmp_path / "runs" / "boom"
    runs.write_manifest(run_dir, runs.new_manifest("boom", "demo", {"train": {"epochs": 1}}, status="created"))
    runs.TextLog(run_dir / "20260101_000000.log").error("RuntimeError: CUDA out of memory")
    code = subprocess.run([sys.executable, "-m", "bevctl.supervise", "--run-dir", str(run_dir), "--",
                           sys.executable, "-c", "import sys; sys.exit(3)"]).returncode
    assert code == 3
    info = runs.describe_run(run_dir)
    assert (info["status"], info["exit_code"]) == ("crashed", 3)
    assert "CUDA out of memory" in info["last_log_lines"][-1]
    result = run_cli("runs", "--json", cwd=tmp_path)
    listed = json.loads(result.stdout)["runs"]
    assert [(r["name"], r["status"], r["exit_code"]) for r in listed] == [("boom", "crashed", 3)]
    human = run_cli("runs", cwd=tmp_path)
    assert "crashed (3)" in human.stdout and "CUDA out of memory" in human.stderr


def test_dead_pid_without_run_end_is_crashed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run_dir = tmp_path / "r"
    runs.write_manifest(run_dir, runs.new_manifest("r", "demo", {}, status="running", pid=proc.pid))
    assert runs.describe_run(run_dir)["status"] == "crashed"


def test_stop_unknown_run(tmp_path):
    result = run_cli("stop", "ghost", cwd=tmp_path)
    assert result.returncode == 2 and "no run named 'ghost'" in result.stderr
