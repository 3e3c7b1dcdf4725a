"""The detached parent of a local run: holds the run lock, starts the trainer, forwards stop signals, records how
it ended.

`bevctl start --local` runs `python -m bevctl.supervise --run-dir DIR --lock-fd N -- <trainer command>` in a new
session, so the run outlives the terminal. It inherits the run's lock (`bevctl.runs.RunLock`) as file N and holds
it until the trainer exits (the trainer inherits it too, so a supervisor killed hard does not free a run whose
trainer still writes). It records its own identity (pid, start time, command line) for `bevctl stop` to check, and
its trainer's. A stop signal goes to the trainer's process group (torchrun and its workers); under `torchpack
dist-run` it goes to the MPI ranks themselves, which mpirun would kill before they have saved. The
trainer finalises run.json itself on a clean end; this process only fills in what a trainer killed hard cannot:
its exit code and the `crashed` status. Stdlib only.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bevctl import runs
from bevctl.errors import BevctlError
from bevctl.launchers.mpi_stop import mpi_program, signal_ranks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bevctl.supervise")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--lock-fd", type=int, default=None, help="the run lock, already held, as an open file")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")

    try:
        lock = runs.RunLock.adopt(args.run_dir, args.lock_fd) if args.lock_fd is not None else runs.claim_run_dir(args.run_dir)
    except (BevctlError, OSError) as exc:
        text = exc.one_line() if isinstance(exc, BevctlError) else f"cannot lock {args.run_dir}: {exc}"
        print(f"error: {text}", file=sys.stderr, flush=True)
        return 2

    # The trainer gets its own process group so a stop reaches torchrun and every worker at once.
    child = subprocess.Popen(command, start_new_session=True, pass_fds=(lock.fd,))
    runs.update_manifest(args.run_dir, pid=os.getpid(), supervisor=runs.process_identity(os.getpid()),
                         trainer_pid=child.pid, trainer=runs.process_identity(child.pid), status="running")

    program = mpi_program(command)

    def forward(signum: int, _frame: object) -> None:
        # mpirun would kill its ranks before they save: a stop goes to the ranks (bevctl.launchers.mpi_stop).
        if program and signum in (signal.SIGTERM, signal.SIGINT) and signal_ranks(child.pid, program, signum):
            return
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)

    code = child.wait()
    manifest = runs.read_manifest(args.run_dir) or {}
    changes: dict = {"exit_code": code if manifest.get("exit_code") is None else manifest["exit_code"]}
    if manifest.get("status") not in runs.FINAL_STATUSES:
        # The trainer did not finalise the manifest: it died without writing run_end.
        changes.update(status="crashed" if code != 0 else "finished", ended_at=time.time())
    runs.update_manifest(args.run_dir, **changes)
    lock.release()
    return code


if __name__ == "__main__":
    sys.exit(main())
