"""One trainer per run: an OS lock (`flock`) on `<run dir>/.lock`, held by the run's supervisor for the whole run.

The kernel drops the lock when the last process holding it exits, however it exits (kill -9 included), so a stale
lock cannot outlive its run. `bevctl start` takes the lock before it writes anything and passes the open file to
the supervisor it starts, so there is no moment when the run is unlocked. A trainer started without bevctl
(`python -m model.train`, a hand-run torchrun) takes the lock itself (`hold_for_trainer`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from bevctl.errors import UsageError
from bevctl.runs.layout import LOCK
from bevctl.runs.process import parent_pid


class RunLocked(UsageError):
    """Another live process holds the run's lock."""


class RunLock:
    """An exclusive flock on a lock file; `fd` may be handed to a child process (`pass_fds`)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike, wait: float = 1.0, name: str = LOCK) -> "RunLock":
        """Take the lock of a run directory (created when absent); RunLocked when a live process holds it. `wait`
        covers a reader probing the lock at the same moment."""
        path = Path(run_dir) / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(path, fd)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                    os.close(fd)
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise RunLocked(f"run {Path(run_dir).name} is locked by a live process",
                                        fix="stop that run first (bevctl stop NAME) or choose another name") from None
                    raise
                time.sleep(0.05)

    @classmethod
    def adopt(cls, run_dir: str | os.PathLike, fd: int) -> "RunLock":
        """The lock a parent passed down as an open file: confirm we hold it (a no-op for the same open file)."""
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cls(Path(run_dir) / LOCK, fd)

    def inheritable(self) -> int:
        os.set_inheritable(self.fd, True)
        return self.fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing our copy; a child that inherited the file keeps the lock
            self.fd = -1

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_held(run_dir: str | os.PathLike) -> bool | None:
    """True when a live process holds the run's lock, False when nobody does, None without a lock file (a run
    from before locks, or a container run)."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
    finally:
        os.close(fd)


def hold_for_trainer(run_dir: str | os.PathLike) -> "RunLock | None":
    """The trainer's side of one trainer per run, called by rank 0 before it writes anything.

    Under `bevctl start` an ancestor (the supervisor, then torchrun or mpirun) holds the lock on the file it handed
    down: nothing to take, None. Started by hand, the trainer takes the lock for its whole life and returns it.
    RunLocked when another live process holds it. None, too, where the lock file cannot be opened or the file
    system has no flock (some network mounts, a container user who does not own the file): there the lock would
    protect nothing, and refusing would stop runs that are fine.
    """
    path = Path(run_dir) / LOCK
    if _ancestor_has_open(path):  # or this process, where a caller (a test, a tool) holds it and trains in-process
        return None
    try:
        return RunLock.acquire(run_dir)
    except RunLocked:
        raise RunLocked(f"run directory {run_dir} is in use: another live process (a run of bevctl start or "
                        "another trainer) holds its lock",
                        fix="stop that run first (bevctl stop NAME), or give this trainer another --run-dir") from None
    except OSError:
        return None


def _ancestor_has_open(path: Path) -> bool:
    """This process or an ancestor has `path` open (compared by device and inode, so any name of it counts)."""
    try:
        target = os.stat(path)
    except OSError:
        return False
    pid = os.getpid()
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                return True
        pid = parent_pid(pid) or 0
    return False

