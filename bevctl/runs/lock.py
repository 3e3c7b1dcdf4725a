"""One trainer per run: an OS lock (`flock`) on `<run dir>/.lock`, held by the run's supervisor for the whole run.

The kernel drops the lock when the last process holding it exits, however it exits (kill -9 included), so a stale
lock cannot outlive its run. `bevctl start` takes the lock before it writes anything and passes the open file to
the supervisor it starts, so there is no moment when the run is unlocked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from bevctl.errors import UsageError
from bevctl.runs.layout import LOCK


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
