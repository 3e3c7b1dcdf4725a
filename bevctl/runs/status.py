"""THE authority on a run's status: `run_status(run_dir)` reads run.json and the end of events.jsonl and, while
the run should be alive, checks that it is: the run lock, the supervisor's process identity (pid + start time +
command line), the container through `bevctl.docker`, or the Slurm job through `bevctl.launchers.slurm`.
`describe_run` adds what `bevctl runs` shows. Both answer for any directory, however broken; never raise."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any, Optional

from bevctl.runs.events import tail_events
from bevctl.runs.layout import CONSOLE, EVENTS, FINAL_STATUSES, MANIFEST, UNREADABLE
from bevctl.runs.lock import lock_held
from bevctl.runs.manifest import ManifestUnreadable, load_manifest
from bevctl.runs.process import identity_matches, pid_alive

# Slurm job states in which the job may still run (squeue/sacct names); any other known state is an end.
SLURM_ALIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STAGE_OUT",
               "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED")


@dataclasses.dataclass
class RunStatus:
    status: str  # one of layout.STATUSES, "unreadable", or "unknown" (no manifest, no events)
    alive: Optional[bool]  # None: cannot tell from here (another host, docker or slurm unreachable)
    reason: str = ""
    exit_code: Optional[int] = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclasses.dataclass
class Liveness:
    alive: Optional[bool]
    reason: str = ""
    exit_code: Optional[int] = None


def run_status(run_dir: str | Path, own_lock: bool = False) -> RunStatus:
    """The run's status; `own_lock`: the caller holds the run lock itself, so the lock says nothing about others."""
    run_dir = Path(run_dir)
    try:
        manifest = load_manifest(run_dir)
    except ManifestUnreadable as exc:
        return RunStatus(UNREADABLE, None, f"{MANIFEST} unreadable: {exc.reason}")
    _, run_end, _ = tail_events(run_dir / EVENTS)
    if manifest is None:
        if run_end:
            return RunStatus(str(run_end.get("status", "finished")), False, "run_end written", _int(run_end.get("exit_code")))
        return RunStatus("unknown", None, f"no {MANIFEST}")
    if run_end and manifest.started_at is not None and _float(run_end.get("time")) < manifest.started_at:
        run_end = {}  # the end of an earlier attempt; this one (resumed) has not written its run_start yet
    if run_end:
        code = _int(run_end.get("exit_code"))
        return RunStatus(str(run_end.get("status", manifest.status)), False, str(run_end.get("message") or "run_end written"),
                         manifest.exit_code if code is None else code)
    if manifest.status not in ("created", "running"):
        return RunStatus(manifest.status, False, f"{MANIFEST} says {manifest.status}", manifest.exit_code)
    live = liveness(run_dir, manifest, own_lock)
    if live.alive is False:
        code = manifest.exit_code if manifest.exit_code is not None else live.exit_code
        return RunStatus("crashed", False, live.reason, code)
    return RunStatus(manifest.status, live.alive, live.reason, manifest.exit_code)


def liveness(run_dir: Path, manifest: Any, own_lock: bool = False) -> Liveness:
    """Is the process, container or job behind a run still there? Checked in order of trust."""
    if manifest.container_id and manifest.where == "container":
        return _container_liveness(manifest.container_id)
    if manifest.job_id:
        return _slurm_liveness(manifest.job_id)
    local = manifest.host in (None, socket.gethostname())
    if local and not own_lock and lock_held(run_dir):
        return Liveness(True, "the run lock is held")
    pid = manifest.pid
    if not pid or not local:
        return Liveness(None, f"started on {manifest.host}" if not local else "no pid recorded")
    supervisor = manifest.supervisor
    if supervisor is not None and supervisor.pid == pid:
        if identity_matches(supervisor.model_dump()):
            return Liveness(True, f"supervisor pid {pid} is running")
        gone = "gone" if not pid_alive(pid) else "reused by another process"
        return Liveness(False, f"supervisor pid {pid} is {gone}")
    if pid_alive(int(pid)):
        return Liveness(True, f"pid {pid} is running")
    return Liveness(False, f"pid {pid} is gone")


def _container_liveness(container_id: str) -> Liveness:
    try:
        from bevctl import docker

        state = docker.state(container_id)
    except ImportError:
        return Liveness(None, "the docker package is not installed")
    except Exception as exc:  # noqa: BLE001 - UsageError: no such container; anything else: docker unreachable
        from bevctl.errors import UsageError

        if isinstance(exc, UsageError):
            return Liveness(False, f"container {container_id[:12]} no longer exists")
        return Liveness(None, "docker unreachable")
    if state.get("status") in ("running", "restarting", "paused", "created"):
        return Liveness(True, f"container {container_id[:12]} is {state.get('status')}")
    return Liveness(False, f"container {container_id[:12]} is {state.get('status')}", _int(state.get("exit_code")))


def _slurm_liveness(job_id: str) -> Liveness:
    try:
        from bevctl.launchers.slurm import job_state
    except ImportError:
        return Liveness(None, "no Slurm support installed")
    try:
        state = job_state(job_id)
    except Exception:  # noqa: BLE001 - slurm unreachable: we cannot tell
        return Liveness(None, "slurm unreachable")
    if state is None:
        return Liveness(None, f"slurm does not know job {job_id}")
    state = str(state).split()[0].upper()
    if state in SLURM_ALIVE:
        return Liveness(True, f"slurm job {job_id} is {state}")
    return Liveness(False, f"slurm job {job_id} is {state}")


def describe_run(run_dir: str | Path) -> dict[str, Any]:
    """Name, phase, status (from `run_status`), progress and last loss of one run directory; an unreadable
    run.json gives an entry with status "unreadable" and the reason, never an exception."""
    run_dir = Path(run_dir)
    st = run_status(run_dir)
    try:
        manifest = load_manifest(run_dir)
    except ManifestUnreadable:
        manifest = None
    last_train, _, last_ckpt = tail_events(run_dir / EVENTS)
    if manifest is None:
        info = {"name": run_dir.name, "run_dir": str(run_dir), "phase": None, "status": st.status,
                "exit_code": st.exit_code, "where": None, "pid": None, "container_id": None, "started_at": None,
                "ended_at": None, "epochs": None}
    else:
        epochs = (manifest.config.get("train") or {}).get("epochs") if isinstance(manifest.config.get("train"), dict) else None
        info = {"name": manifest.name, "run_dir": str(run_dir), "phase": manifest.phase, "status": st.status,
                "exit_code": st.exit_code, "where": manifest.where, "pid": manifest.pid,
                "container_id": manifest.container_id, "started_at": manifest.started_at,
                "ended_at": manifest.ended_at, "epochs": epochs}
    info.update({
        "alive": st.alive,
        "reason": st.reason,
        "epoch": last_train.get("epoch") if last_train else None,
        "iter": last_train.get("iter") if last_train else None,
        "iters_per_epoch": last_train.get("iters_per_epoch") if last_train else None,
        "loss": last_train.get("loss") if last_train else None,
        "last_checkpoint": last_ckpt.get("path") if last_ckpt else None,
    })
    if st.status == "crashed":
        info["last_log_lines"] = last_log_lines(run_dir)
    return info


def last_log_lines(run_dir: Path, count: int = 5) -> list[str]:
    """The last lines of the trainer's console (a traceback, usually), else of the text log."""
    try:
        logs = sorted(run_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    except OSError:
        logs = []
    for path in [run_dir / CONSOLE, *reversed(logs)]:
        try:
            if not path.is_file():
                continue
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            return lines[-count:]
    return []


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
