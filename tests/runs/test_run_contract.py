"""The typed run contract: RunManifest, one model per event kind, and the one status authority `run_status`."""

import json
import os
import subprocess
import sys
import types

import pytest

from bevctl import runs


def _manifest(run_dir, **fields):
    runs.write_manifest(run_dir, runs.new_manifest(run_dir.name, "demo", {"train": {"epochs": 2}}, **fields))


def test_manifest_model_keeps_unknown_fields_and_new_optional_ones(tmp_path):
    _manifest(tmp_path, status="running", future_field={"x": 1}, job_id="42", resumed_from="/data/e.pth")
    typed = runs.load_manifest(tmp_path)
    assert isinstance(typed, runs.RunManifest)
    assert (typed.status, typed.job_id, typed.resumed_from, typed.saved_checkpoints) == ("running", "42", "/data/e.pth", [])
    assert typed.to_dict()["future_field"] == {"x": 1} and typed.to_dict()["schema"] == 1


@pytest.mark.parametrize("content, says", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not an object"),
    (b"\xff\xfe", "not UTF-8"),
    (json.dumps({"name": "x", "status": "exploded"}).encode(), "status"),
    (json.dumps({"name": "x", "config": []}).encode(), "config"),
])
def test_unreadable_manifest_is_one_entry_and_hides_no_other_run(tmp_path, content, says):
    _manifest(tmp_path / "good", status="finished", exit_code=0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_bytes(content)
    listed = {r["name"]: r for r in runs.list_runs(tmp_path)}
    assert listed["good"]["status"] == "finished"
    assert listed["bad"]["status"] == runs.UNREADABLE and says in listed["bad"]["reason"]
    with pytest.raises(runs.ManifestUnreadable):
        runs.load_manifest(tmp_path / "bad")
    if says.startswith("not"):  # the plain reader gives None for what is not a JSON object at all
        assert runs.read_manifest(tmp_path / "bad") is None


def test_event_models_check_what_is_written_and_keep_extras_on_read(tmp_path):
    path = tmp_path / "events.jsonl"
    with runs.EventWriter(path) as writer:
        writer.emit("train", epoch=1, iter=1, lr=1e-3, loss=0.5, **{"loss/map/divider/dice": 0.4})
        writer.emit("run_end", status="finished", exit_code=0, message="done")
        with pytest.raises(ValueError):
            writer.emit("run_end", status="exploded", exit_code=0)
        with pytest.raises(ValueError):
            writer.emit("train", epoch="first")
    with open(path, "a") as f:
        f.write('{"schema": 1, "time": 1.0, "kind": "checkpoint_saved", "reason": "cosmic rays"}\n')
        f.write('{"schema": 2, "time": 2.0, "kind": "future_kind", "x": 1}\ngarbage\n')
    events, skipped = runs.read_typed_events(path)
    assert [type(e).__name__ for e in events] == ["Train", "RunEnd", "Event"]
    assert events[0].model_extra["loss/map/divider/dice"] == 0.4 and events[2].model_extra["x"] == 1
    assert skipped == 2  # the checkpoint_saved with an unknown reason, and the garbage line
    assert [e["kind"] for e in runs.read_events(path)] == ["train", "run_end", "checkpoint_saved", "future_kind"]


def test_final_statuses_are_defined_once():
    import ast
    from pathlib import Path

    from tests.conftest import ROOT

    assert set(runs.FINAL_STATUSES) < set(runs.STATUSES)
    # No other module spells the list out again (the copies drifted apart before).
    # (A literal that only backs up `getattr(runs, "FINAL_STATUSES", ...)` names the contract and is let pass.)
    copies = []
    for path in [*(ROOT / "bevctl").rglob("*.py"), *(ROOT / "model").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if words == set(runs.FINAL_STATUSES) and 'getattr(runs, "FINAL_STATUSES"' not in text:
                    copies.append(str(Path(path).relative_to(ROOT)))
    assert copies == ["bevctl/runs/layout.py"], copies


def test_run_status_trusts_process_identity_not_the_pid(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        identity = runs.process_identity(sleeper.pid)
        _manifest(tmp_path, status="running", pid=sleeper.pid, supervisor=identity)
        st = runs.run_status(tmp_path)
        assert (st.status, st.alive) == ("running", True)
        # The same pid, but another process (what a reused pid looks like): a different start time.
        _manifest(tmp_path, status="running", pid=sleeper.pid, supervisor={**identity, "start_time": identity["start_time"] - 1})
        st = runs.run_status(tmp_path)
        assert (st.status, st.alive) == ("crashed", False) and "reused" in st.reason
    finally:
        sleeper.kill()
        sleeper.wait()
    _manifest(tmp_path, status="running", pid=sleeper.pid, supervisor=identity)
    st = runs.run_status(tmp_path)
    assert (st.status, st.alive) == ("crashed", False) and "gone" in st.reason


def test_run_end_and_final_manifest_win(tmp_path):
    _manifest(tmp_path, status="running", pid=os.getpid())
    with runs.EventWriter(tmp_path / runs.EVENTS) as writer:
        writer.emit("run_end", status="failed", exit_code=3, message="no space left on device")
    st = runs.run_status(tmp_path)
    assert (st.status, st.exit_code, st.final) == ("failed", 3, True) and "no space" in st.reason


def test_run_lock_is_exclusive_and_shows_the_run_alive(tmp_path):
    _manifest(tmp_path, status="running")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bevctl.runs import RunLock; lock = RunLock.acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(60)"), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert runs.lock_held(tmp_path) is True
        assert runs.run_status(tmp_path).alive is True
        with pytest.raises(runs.RunLocked):
            runs.RunLock.acquire(tmp_path, wait=0.2)
        with pytest.raises(runs.RunLocked) as refused:
            runs.claim_run_dir(tmp_path)
        assert f"run {tmp_path.name}" in str(refused.value) and "bevctl stop" in refused.value.fix
    finally:
        holder.kill()
        holder.wait()
    assert runs.lock_held(tmp_path) is False  # the kernel dropped it with the process (kill -9 included)
    runs.claim_run_dir(tmp_path).release()


def test_slurm_hook_decides_for_jobs_and_its_absence_is_tolerated(tmp_path, monkeypatch):
    _manifest(tmp_path, status="running", job_id="1234", where="slurm")
    monkeypatch.setitem(sys.modules, "bevctl.launchers.slurm", None)  # Slurm support not installed
    assert runs.run_status(tmp_path).alive is None  # cannot tell, and no error
    states = {"1234": "RUNNING"}
    fake = types.ModuleType("bevctl.launchers.slurm")
    fake.job_state = states.get
    monkeypatch.setitem(sys.modules, "bevctl.launchers", types.ModuleType("bevctl.launchers"))
    monkeypatch.setitem(sys.modules, "bevctl.launchers.slurm", fake)
    assert (runs.run_status(tmp_path).status, runs.run_status(tmp_path).alive) == ("running", True)
    states["1234"] = "CANCELLED by 0"
    st = runs.run_status(tmp_path)
    assert (st.status, st.alive) == ("crashed", False) and "CANCELLED" in st.reason


def test_create_run_dir_is_atomic_and_refuses_a_taken_name(tmp_path):
    run_dir, lock = runs.create_run_dir(tmp_path, "r", runs.new_manifest("r", "demo", {}))
    try:
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "run.json"]
        with pytest.raises(runs.RunLocked):
            runs.create_run_dir(tmp_path, "r", runs.new_manifest("r", "demo", {}))
    finally:
        lock.release()
    with pytest.raises(Exception, match="already holds a run"):
        runs.create_run_dir(tmp_path, "r", runs.new_manifest("r", "demo", {}))
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no half-made folder left behind
