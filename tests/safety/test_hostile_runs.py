"""Issue 15, run side: one trainer per run, stop signals only its own run, a run never deletes or overwrites what it
did not write, a full disk is one line and a failed run_end. Real processes throughout (the CLI, the supervisor,
the trainer); each refusal asserts the exit code, one error line with a fix, no traceback, and that every file that
existed before is byte-identical afterwards (`tests.safety.hostile`)."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bevctl import runs
from tests.conftest import ROOT, run_cli
from tests.safety.hostile import Snapshot, expect_refusal, finished, hostile, popen_cli, wait_until


def _demo_config(**train):
    from bevctl.phases import load_phase

    config = load_phase("demo").model_dump(mode="json")
    config["train"].update(train)
    return config


def make_run(cwd: Path, name: str, status: str = "finished", latest: bool = False, **fields) -> Path:
    """A run directory as `bevctl start` leaves it (run.json, events), in cwd/runs/."""
    run_dir = cwd / "runs" / name
    manifest = runs.new_manifest(name, "demo", fields.pop("config", None) or _demo_config(), status=status, **fields)
    runs.write_manifest(run_dir, manifest)
    with runs.EventWriter(run_dir / runs.EVENTS) as events:
        events.emit("run_start", phase="demo", world_size=1, epochs=8)
        if status in ("finished", "stopped", "failed"):
            events.emit("run_end", status=status, exit_code=0 if status != "failed" else 1, message=status)
    if latest:
        (run_dir / runs.LATEST).write_bytes(b"a checkpoint")
    return run_dir


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def sleeper():
    """An unrelated live process (what a reused pid points at)."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def _fake_data(cwd: Path) -> list[str]:
    """A data root that passes the preflight (it looks for the version folder) and makes the trainer fail at once
    when it reads the tables, so a real run starts and ends within seconds."""
    (cwd / "fake-data" / "v1.0-trainval").mkdir(parents=True)
    return ["--set", "data.root=fake-data", "--set", "data.synthetic=false", "--set", "train.device=cpu"]


# --------------------------------------------------------------------------------------------- one trainer per run


@pytest.mark.slow
def test_two_starts_of_one_name_at_once_exactly_one_starts(tmp_path):
    args = ("start", "demo", "--local", "--yes", "--name", "same", *_fake_data(tmp_path))
    first, second = popen_cli(*args, cwd=tmp_path), popen_cli(*args, cwd=tmp_path)
    results = [finished(first), finished(second)]
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [(r.returncode, r.stderr[-500:]) for r in results]
    loser = next(r for r in results if r.returncode == 2)
    expect_refusal(loser, 2, ["same"], lines=None)  # the preflight table may come first
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["same"]  # no half-made second folder
    run_dir = tmp_path / "runs" / "same"
    assert wait_until(lambda: runs.run_status(run_dir).final, timeout=300), runs.run_status(run_dir)
    ends = [e for e in runs.read_events(run_dir / runs.EVENTS) if e["kind"] == "run_end"]
    assert len(ends) <= 1 and not runs.read_manifest(run_dir).get("previous_attempts")  # one trainer, one attempt


@pytest.fixture
def live_run(tmp_path):
    """A run whose real supervisor (`python -m bevctl.supervise`) holds the lock, its trainer a stand-in."""
    run_dir = make_run(tmp_path, "live", status="created", latest=True)
    proc = subprocess.Popen([sys.executable, "-m", "bevctl.supervise", "--run-dir", str(run_dir), "--",
                             "sleep", "120"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: (runs.read_manifest(run_dir) or {}).get("supervisor"), timeout=30)
    yield run_dir
    if proc.poll() is None:
        proc.kill()
    proc.wait()


SLOW = pytest.mark.slow  # the quick tier (make check) keeps one case of each kind


@pytest.mark.parametrize("args", [
    ("--resume", "auto", "--name", "live"),
    pytest.param(("--resume", "auto"), marks=SLOW),  # the newest run of the phase, which is running
    ("--name", "live"),
    pytest.param(("--resume", "runs/live/latest.pth"), marks=SLOW),
    pytest.param(("--resume", "runs/live"), marks=SLOW),
])
def test_start_refuses_a_running_run_and_names_it(tmp_path, live_run, args):
    supervisor = runs.read_manifest(live_run)["supervisor"]["pid"]
    hostile("start", "demo", "--local", "--yes", *args, cwd=tmp_path, code=2,
            says=["run live", "is running", f"pid {supervisor}", "bevctl stop live"], within=60)


def test_stop_signals_the_verified_supervisor_and_the_run_ends(tmp_path, live_run):
    manifest = runs.read_manifest(live_run)
    assert runs.identity_matches(manifest["supervisor"])
    result = run_cli("stop", "live", "--grace", "20", "--json", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] in runs.FINAL_STATUSES
    assert wait_until(lambda: not runs.pid_alive(manifest["trainer_pid"]), timeout=10), "the trainer got the signal"
    assert runs.lock_held(live_run) is False


def test_stop_reaches_the_trainer_when_its_supervisor_was_killed_hard(tmp_path, live_run):
    """kill -9 of the supervisor leaves its trainer running and holding the lock; stop signals that trainer (checked
    by its recorded identity) instead of calling the run stale."""
    manifest = runs.read_manifest(live_run)
    assert runs.identity_matches(manifest["trainer"]) and manifest["trainer"]["pid"] == manifest["trainer_pid"]
    os.kill(manifest["supervisor"]["pid"], signal.SIGKILL)
    assert wait_until(lambda: not runs.identity_matches(manifest["supervisor"]), timeout=10)
    assert runs.lock_held(live_run) is True and runs.run_status(live_run).alive is True
    result = run_cli("stop", "live", "--grace", "20", "--json", cwd=tmp_path, timeout=60)
    assert wait_until(lambda: not runs.pid_alive(manifest["trainer_pid"]), timeout=10), "the trainer got the signal"
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] in runs.FINAL_STATUSES
    assert runs.lock_held(live_run) is False


@pytest.mark.parametrize("phase", [(), ("--phase", "demo")])
def test_a_trainer_started_by_hand_refuses_a_run_another_process_holds(tmp_path, live_run, phase):
    """`python -m model.train` on a run directory that a live run holds: one line, exit 2, nothing written (with
    --phase it would have rewritten run.json)."""
    snap = Snapshot.take(live_run)
    result = subprocess.run([sys.executable, "-m", "model.train", "--run-dir", str(live_run), *phase],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, timeout=120)
    expect_refusal(result, 2, ["runs/live", "in use", "bevctl stop"])
    snap.assert_unchanged()


@pytest.mark.slow
def test_a_trainer_started_by_hand_holds_its_run_and_stop_reaches_it(tmp_path, synth_root):
    """The development path, real trainer: it takes the run lock itself, a second trainer on the same directory is
    refused, and `bevctl stop` checks its recorded identity and stops it with a final checkpoint."""
    run_dir = tmp_path / "runs" / "byhand"
    cmd = [sys.executable, "-m", "model.train", "--phase", "demo", "--run-dir", str(run_dir),
           "--set", f"data.root={synth_root}", "--set", "train.epochs=100", "--set", "train.eval_interval=0",
           "--set", "data.workers=0", "--set", "train.device=cpu", "--set", "launch.cpu_processes=1"]
    env = {**os.environ, "NO_COLOR": "1"}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: any(e["kind"] == "train" for e in runs.read_events(run_dir / runs.EVENTS)),
                          timeout=600), first.stderr.read() if first.poll() is not None else "no training step logged"
        manifest = runs.read_manifest(run_dir)
        assert manifest["pid"] == first.pid and manifest["trainer"]["pid"] == first.pid
        assert runs.lock_held(run_dir) is True and runs.run_status(run_dir).alive is True
        second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        expect_refusal(second, 2, ["in use", "bevctl stop"])
        assert runs.read_manifest(run_dir)["trainer"]["pid"] == first.pid
        assert sum(e["kind"] == "run_start" for e in runs.read_events(run_dir / runs.EVENTS)) == 1
        result = run_cli("stop", "byhand", "--grace", "120", "--json", cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr
        assert first.wait(timeout=60) == 0
        assert runs.run_status(run_dir).status == "stopped" and (run_dir / runs.LATEST).is_file()
        assert runs.lock_held(run_dir) is False
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()


# --------------------------------------------------------------------------------------------- stop: only its own run


def test_stop_never_signals_a_reused_pid(tmp_path, sleeper):
    other = runs.process_identity(sleeper.pid)
    # run.json records a supervisor with this pid but another start time: the pid was reused by `sleep`.
    make_run(tmp_path, "old", status="running", pid=sleeper.pid,
             supervisor={**other, "start_time": other["start_time"] - 100, "cmdline": ["python", "-m", "bevctl.supervise"]})
    hostile("stop", "old", cwd=tmp_path, code=2, says=["run old", "stale", "nothing was signalled"], within=30)
    time.sleep(0.2)
    assert sleeper.poll() is None, "the unrelated process was signalled"


def test_stop_without_a_recorded_identity_signals_nothing(tmp_path, sleeper):
    make_run(tmp_path, "legacy", status="running", pid=sleeper.pid)  # a run.json from before identities
    hostile("stop", "legacy", cwd=tmp_path, code=1, says=["run legacy", f"pid {sleeper.pid}", "nothing was signalled"],
            within=30)
    assert sleeper.poll() is None


def test_stop_of_a_dead_run_is_stale_and_the_hint_names_the_exact_run(tmp_path):
    pid = dead_pid()
    make_run(tmp_path, "gone", status="running", pid=pid,
             supervisor={"pid": pid, "start_time": 1, "cmdline": ["python", "-m", "bevctl.supervise"]})
    line = hostile("stop", "gone", cwd=tmp_path, code=2, says=["run gone", "crashed", "stale"]).stderr
    assert "bevctl start demo --resume auto --name gone" in line
    make_run(tmp_path, "done", status="finished")
    hostile("stop", "done", cwd=tmp_path, code=2, says=["not running", "bevctl start demo --resume auto --name done"])


# --------------------------------------------------------------------------------------------- corrupt run.json


@pytest.mark.parametrize("content", [b"{half a manifest", pytest.param(b"\xff\xfe\x00", marks=SLOW),
                                     pytest.param(b"[]", marks=SLOW), pytest.param(b'{"name": "bad", "status": 7}', marks=SLOW)])
def test_a_corrupt_run_json_is_one_unreadable_row_and_hides_no_other_run(tmp_path, content):
    make_run(tmp_path, "good", status="finished")
    bad = tmp_path / "runs" / "bad"
    bad.mkdir()
    (bad / "run.json").write_bytes(content)
    snap = Snapshot.take(tmp_path)
    listed = run_cli("runs", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)["runs"]}
    assert rows["good"]["status"] == "finished" and rows["bad"]["status"] == runs.UNREADABLE
    hostile("stop", "bad", cwd=tmp_path, code=2, says=["run bad", "unreadable"])
    hostile("stop", "good", cwd=tmp_path, code=2, says=["run good is not running"])
    snap.assert_unchanged()


# --------------------------------------------------------------------------------------------- resume


@pytest.mark.slow  # three preflights with the doctor's torch probe
def test_resume_continues_with_the_runs_own_recorded_config(tmp_path):
    make_run(tmp_path, "mine", status="stopped", latest=True, config=_demo_config(epochs=3, max_keep=1))
    snap = Snapshot.take(tmp_path)
    plan = run_cli("start", "demo", "--local", "--resume", "auto", "--name", "mine", "--dry-run", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    plan = json.loads(plan.stdout)
    assert (plan["run"], plan["resuming"], plan["epochs"]) == ("mine", True, 3)  # the phase file says 8
    more = run_cli("start", "demo", "--local", "--resume", "auto", "--name", "mine", "--set", "train.epochs=5",
                   "--dry-run", "--json", cwd=tmp_path)
    assert json.loads(more.stdout)["epochs"] == 5  # this command's overrides still apply
    snap.assert_unchanged()
    hostile("start", "demo-phase3", "--local", "--resume", "auto", "--name", "mine", "--dry-run", cwd=tmp_path,
            code=2, says=["run mine was started from phase 'demo'", "not 'demo-phase3'"])


@pytest.mark.slow
def test_resume_from_a_folder_outside_runs_starts_a_new_run_and_leaves_the_folder_alone(tmp_path):
    data = _fake_data(tmp_path)
    mine = tmp_path / "my-checkpoints"
    mine.mkdir()
    for name in ("epoch_1.pth", "epoch_2.pth", "epoch_3.pth"):
        (mine / name).write_bytes(b"the user's own " + name.encode())
    snap = Snapshot.take(mine)
    result = run_cli("start", "demo", "--local", "--yes", "--resume", str(mine / "epoch_2.pth"), "--name", "from-mine",
                     "--set", "train.max_keep=1", *data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "from-mine"
    manifest = runs.read_manifest(run_dir)
    assert manifest["resumed_from"] == str(mine / "epoch_2.pth") and manifest["config"]["resume"] == manifest["resumed_from"]
    assert wait_until(lambda: runs.run_status(run_dir).final, timeout=300), runs.run_status(run_dir)
    snap.assert_unchanged()
    assert snap.new_paths() == [] and not (mine / "run.json").exists()


@pytest.mark.slow  # three preflights with the doctor's torch probe
def test_a_zero_byte_temp_from_a_kill_during_the_first_save_blocks_nothing(tmp_path):
    pid = dead_pid()
    run_dir = make_run(tmp_path, "killed", status="running", pid=pid,
                       supervisor={"pid": pid, "start_time": 1, "cmdline": ["python", "-m", "bevctl.supervise"]})
    (run_dir / ".epoch_1.pth.x81k2a.tmp").write_bytes(b"")  # what kill -9 inside atomic_path leaves
    assert runs.run_status(run_dir).status == "crashed"
    snap = Snapshot.take(tmp_path)
    resume = run_cli("start", "demo", "--local", "--resume", "auto", "--name", "killed", "--dry-run", "--json", cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    assert json.loads(resume.stdout)["resuming"] is True  # from scratch, in its own folder (no latest.pth yet)
    fresh = run_cli("start", "demo", "--local", "--name", "killed-2", "--dry-run", "--json", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    refused = hostile("start", "demo", "--local", "--name", "killed", "--dry-run", cwd=tmp_path, code=2,
                      says=["already holds a run"])
    assert "--resume auto --name killed" in refused.stderr
    snap.assert_unchanged()


# --------------------------------------------------------------------------------------------- names and mounts


@pytest.mark.parametrize("mounts, says", [
    (":/x", "empty host path"),
    pytest.param("/no/such/host/path:/x", "does not exist", marks=SLOW),
    pytest.param("{tmp}:relative", "not absolute", marks=SLOW),
    ("{tmp}:/a;{tmp}:/a", "already mounted"),
    pytest.param("{tmp}:/workspace/bevfusion", "already mounted", marks=SLOW),
    pytest.param("{tmp}", "not HOST:CONTAINER", marks=SLOW),
])
def test_extra_mounts_are_validated_before_anything_starts(tmp_path, mounts, says):
    env = {"BEVCTL_EXTRA_MOUNTS": mounts.format(tmp=tmp_path)}
    hostile("start", "demo", "--container", "--yes", "--name", "m", cwd=tmp_path, env=env, code=2,
            says=["BEVCTL_EXTRA_MOUNTS", says], within=60)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("path", ["../escape.pth", pytest.param("/etc/passwd/x.pth", marks=SLOW)])
def test_resume_path_that_is_no_checkpoint_is_refused(tmp_path, path):
    hostile("start", "demo", "--local", "--yes", "--resume", path, cwd=tmp_path, code=2, says=["not found"])
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------- the run's own files


def test_pruning_deletes_only_checkpoints_the_run_saved(tmp_path):
    torch = pytest.importorskip("torch")
    from model import checkpoint as ckpt

    run_dir = make_run(tmp_path, "p", status="running")
    for name in ("epoch_1.pth", "epoch_2.pth"):  # the user's, copied in before (not written by this run)
        (run_dir / name).write_bytes(b"user " + name.encode())
    snap = Snapshot.take(run_dir / "epoch_1.pth", run_dir / "epoch_2.pth")
    for epoch in (3, 4, 5):
        ckpt.save_run_checkpoint(run_dir, {"meta": {"epoch": epoch}, "w": torch.zeros(2)}, epoch, max_keep=1)
    snap.assert_unchanged()
    assert sorted(p.name for p in run_dir.glob("*.pth")) == ["epoch_1.pth", "epoch_2.pth", "epoch_5.pth", "latest.pth"]
    assert runs.read_manifest(run_dir)["saved_checkpoints"] == ["epoch_5.pth"]


SAVE_UNDER_LIMIT = """
import resource, signal, sys, torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG instead of a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
from bevctl.errors import guarded
from model.checkpoint import save_run_checkpoint
guarded(lambda: save_run_checkpoint(sys.argv[1], {"w": torch.zeros(1 << 16)}, 2, max_keep=1))
"""


def test_a_save_over_the_file_size_limit_is_one_line_and_the_previous_checkpoint_survives(tmp_path):
    pytest.importorskip("torch")
    run_dir = make_run(tmp_path, "full", status="running")
    (run_dir / runs.LATEST).write_bytes(b"the previous checkpoint")
    snap = Snapshot.take(run_dir / runs.LATEST)
    result = subprocess.run([sys.executable, "-c", SAVE_UNDER_LIMIT, str(run_dir)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"}, timeout=120)
    expect_refusal(result, 3, ["cannot save checkpoint", "file size limit"], lines=None)
    snap.assert_unchanged()
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "epoch_2.pth").exists()


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "256k"):
        pytest.skip("mounting a small tmpfs needs root (the file-size-limit test covers the same path)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("how, says", [("full", "no space left"), ("read-only", "read-only")])
def test_a_full_or_read_only_disk_at_a_save_is_one_line(small_disk, how, says):
    pytest.importorskip("torch")
    run_dir = small_disk / "runs" / "r"
    make_run(small_disk, "r", status="running")
    (run_dir / runs.LATEST).write_bytes(b"the previous checkpoint")
    if how == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    snap = Snapshot.take(run_dir)
    code = ("import sys, torch\nfrom bevctl.errors import guarded\nfrom model.checkpoint import save_run_checkpoint\n"
            "guarded(lambda: save_run_checkpoint(sys.argv[1], {'w': torch.zeros(1 << 18)}, 1, max_keep=1))\n")
    result = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"}, timeout=120)
    expect_refusal(result, 3, ["cannot save checkpoint", says], lines=None)
    snap.assert_unchanged()


@pytest.mark.slow
def test_the_trainer_ends_a_run_failed_with_the_reason_when_its_save_fails(tmp_path, synth_root):
    """The trainer itself, over RLIMIT_FSIZE at its first checkpoint: run_end failed with the disk's reason, one error
    line on stderr, exit 3, the run dir holding no torn file."""
    run_dir = tmp_path / "runs" / "tight"
    env = {**os.environ, "NO_COLOR": "1"}

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # logs fit, a checkpoint does not

    result = subprocess.run(
        [sys.executable, "-m", "model.train", "--phase", "demo", "--run-dir", str(run_dir),
         "--set", f"data.root={synth_root}", "--set", "train.epochs=1", "--set", "train.max_iters_per_epoch=1",
         "--set", "train.eval_interval=0", "--set", "data.workers=0", "--set", "train.device=cpu"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900, preexec_fn=limit)
    expect_refusal(result, 3, ["cannot save checkpoint", "file size limit"], lines=None)
    end = [e for e in runs.read_events(run_dir / runs.EVENTS) if e["kind"] == "run_end"][-1]
    assert end["status"] == "failed" and "file size limit" in end["message"] and end["exit_code"] == 3
    assert runs.run_status(run_dir).status == "failed"
    assert not list(run_dir.glob("*.pth")) and not list(run_dir.glob(".*.tmp"))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "nuscenes-synth"
    result = run_cli("data", "synth", "--out", str(root), "--version", "v1.0-trainval", "--scenes", "10", "--samples-per-scene", "1", timeout=900)
    assert result.returncode == 0, result.stderr
    return root


def test_errno_words_cover_the_disk_failures():
    from model import checkpoint as ckpt

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES):
        error = ckpt._save_error(RuntimeError("iostream error").with_traceback(None), Path("/r/latest.pth"))
        assert isinstance(error, RuntimeError)  # no OSError behind it: not guessed
        wrapped = RuntimeError("enforce fail")
        wrapped.__context__ = OSError(code, os.strerror(code))
        line = ckpt._save_error(wrapped, Path("/r/latest.pth")).one_line()
        assert line.startswith("cannot save checkpoint /r/latest.pth: ") and "(fix: " in line
