"""Taking a run directory for one trainer: created atomically with its lock held, or an existing run locked for a
resume; refused with one line naming the live run when another process has it."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bevctl.errors import UsageError
from bevctl.runs.layout import LOCK
from bevctl.runs.lock import RunLock, RunLocked
from bevctl.runs.manifest import read_manifest, write_manifest
from bevctl.runs.status import run_status


def busy_error(run_dir: Path, reason: str = "") -> RunLocked:
    """The refusal for a run another process is running, naming it."""
    manifest = read_manifest(run_dir) or {}
    who = []
    if manifest.get("container_id"):
        who.append(f"container {str(manifest['container_id'])[:12]}")
    elif manifest.get("job_id"):
        who.append(f"slurm job {manifest['job_id']}")
    elif manifest.get("pid"):
        who.append(f"pid {manifest['pid']}")
    if isinstance(manifest.get("started_at"), (int, float)):
        who.append("started " + time.strftime("%Y-%m-%d %H:%M", time.localtime(manifest["started_at"])))
    detail = f" ({', '.join(who)})" if who else (f" ({reason})" if reason else "")
    return RunLocked(f"run {run_dir.name} in {run_dir} is running{detail}",
                     fix=f"stop it first with `bevctl stop {run_dir.name}`, or choose another name with --name")


def create_run_dir(root: Path, name: str, manifest: dict[str, Any]) -> tuple[Path, RunLock]:
    """`root/name/` created whole (run.json written, lock held) by one rename: a second start of the same name at
    the same moment finds it taken. An existing empty folder is replaced; a non-empty one is refused."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".new-{name}.", dir=root))
    os.chmod(tmp, 0o777 & ~_umask())
    lock = RunLock.acquire(tmp, wait=0)
    target = root / name
    try:
        write_manifest(tmp, manifest)
        os.rename(tmp, target)
    except OSError as exc:
        lock.release()
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            if target.is_dir() and run_status(target).alive:
                raise busy_error(target) from None
            raise UsageError(f"run directory {target} already holds a run",
                             fix=f"continue it with --resume auto --name {name}, or choose another name with --name {name}-2") from None
        raise
    lock.path = target / LOCK
    return target, lock


def claim_run_dir(run_dir: Path) -> RunLock:
    """The lock of an existing run (to resume it); refused when a live process, container or job has the run."""
    try:
        lock = RunLock.acquire(run_dir)
    except RunLocked:
        raise busy_error(run_dir) from None
    status = run_status(run_dir, own_lock=True)
    if status.alive:
        lock.release()
        raise busy_error(run_dir, status.reason)
    return lock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
