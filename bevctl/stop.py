"""Stop a run: check the recorded pid is still that run's supervisor (start time and command line), SIGTERM it
(or stop its container), wait for the final checkpoint; a stale pid is reported, never signalled. Where the
supervisor is gone but its trainer runs on, or a trainer was started by hand, the trainer is checked and signalled."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from bevctl import runs
from bevctl.errors import CheckFailed, UsageError


def resume_hint(info: dict[str, Any]) -> str:
    """The command that continues exactly this run, with its own recorded config."""
    return f"bevctl start {info.get('phase') or 'PHASE'} --resume auto --name {info['name']}"


def stop_run(run_dir: Path, grace: float | None = None) -> dict[str, Any]:
    """SIGTERM the run's supervisor (after checking it is that process), wait up to the grace period for its final
    checkpoint, report what it saved."""
    st = runs.run_status(run_dir)
    info = runs.describe_run(run_dir)
    if st.status == runs.UNREADABLE:
        raise UsageError(f"run {run_dir.name}: {st.reason}", fix=f"look at {run_dir / runs.MANIFEST}; bevctl cannot tell which process runs it")
    if st.final:
        stale = ""
        if st.status == "crashed" and info.get("pid") and info["where"] == "local":
            stale = f"; its recorded pid {info['pid']} is stale, nothing was signalled"
        raise UsageError(f"run {info['name']} is not running (status: {st.status}{': ' + st.reason if st.reason and st.status == 'crashed' else ''}){stale}",
                         fix=f"continue it with: {resume_hint(info)}")
    manifest = runs.load_manifest(run_dir)
    if grace is None:
        grace = float((manifest.config.get("train") or {}).get("grace_seconds", 300)) + 10
    if manifest.where == "container" and manifest.container_id:
        from bevctl import docker

        # SIGTERM to tini (PID 1), which forwards it; docker sends SIGKILL only after the grace period.
        docker.stop(manifest.container_id, int(grace))
        return runs.describe_run(run_dir)
    if manifest.job_id:
        from bevctl.launchers import slurm

        # SIGTERM to the job's steps (to the batch shell alone where torchpack runs outside a step: its trap signals
        # the ranks); a queued job is cancelled before it starts.
        if slurm.stop(manifest.job_id, batch_only=manifest.launcher == "torchpack"):
            runs.update_manifest(run_dir, status="stopped", exit_code=0, ended_at=time.time())
            return runs.describe_run(run_dir)
    else:
        pid = manifest.pid
        if not pid or manifest.host not in (None, socket.gethostname()):
            raise UsageError(f"run {info['name']} was started on {manifest.host}", fix="run bevctl stop on that host")
        _signal_run(info["name"], manifest, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        info = runs.describe_run(run_dir)
        if info["status"] in runs.FINAL_STATUSES and _manifest_final(run_dir):
            break
        time.sleep(0.5)
    return runs.describe_run(run_dir)


def _signal_run(name: str, manifest: Any, signum: int) -> str:
    """Signal the run's supervisor, or, where it is gone (killed hard) or there never was one (a trainer started by
    hand), the trainer it recorded; each only after checking the pid is still that process (start time and command
    line as run.json recorded them): a pid reused by another program is never signalled. Returns which was."""
    pid = int(manifest.pid)
    targets = []
    if manifest.supervisor is not None and manifest.supervisor.pid == pid:
        targets.append(("supervisor", manifest.supervisor))
    if manifest.trainer is not None:
        targets.append(("trainer", manifest.trainer))
    if not targets:
        raise CheckFailed(f"run {name}: pid {pid} cannot be checked as its supervisor (run.json records no process "
                          "identity); nothing was signalled",
                          fix=f"check `ps -o pid,lstart,args -p {pid}` and stop it by hand if it is the trainer")
    for role, recorded in targets:
        # The supervisor started its trainer as a process-group leader: the group is torchrun and every worker.
        # A trainer started by hand is signalled alone (its group is the user's shell pipeline).
        if _signal_verified(recorded.model_dump(), signum, group=role == "trainer" and manifest.supervisor is not None):
            return role
    raise CheckFailed(f"run {name} is stale: pid {pid} is no longer its supervisor (the run ended without "
                      "recording it); nothing was signalled",
                      fix=f"see `bevctl runs`; continue the run with: bevctl start {manifest.phase or 'PHASE'} --resume auto --name {name}")


def _signal_verified(recorded: dict, signum: int, group: bool) -> bool:
    """Send `signum` to the recorded process if it is still that process; False (nothing sent) when it is not."""
    pid = int(recorded["pid"])
    handle = None
    try:  # a pidfd pins the process: the check and the signal reach the same one, even if the pid is reused between
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pass
    try:
        if not runs.identity_matches(recorded):
            return False
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        elif handle is not None:
            signal.pidfd_send_signal(handle, signum)
        else:
            os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return True  # it ended between the check and the signal: what the signal was for
    finally:
        if handle is not None:
            os.close(handle)


def _manifest_final(run_dir: Path) -> bool:
    """The supervisor (local) has recorded the exit, or the container has exited."""
    st = runs.run_status(run_dir)
    current = runs.read_manifest(run_dir) or {}
    if current.get("where") == "container":
        return st.alive is not True
    return current.get("exit_code") is not None or st.alive is not True
