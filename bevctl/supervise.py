"""The detached parent of a local run: starts the trainer, forwards stop signals, records how it ended.

`bevctl start --local` runs `python -m bevctl.supervise --run-dir DIR -- <trainer command>` in a new session, so
the run outlives the terminal. The trainer finalises run.json itself on a clean end; this process only fills in
what a trainer killed hard cannot: its exit code and the `crashed` status. Stdlib only.
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

FINAL = ("finished", "stopped", "failed", "crashed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bevctl.supervise")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")

    # The trainer gets its own process group so a stop reaches torchrun and every worker at once.
    child = subprocess.Popen(command, start_new_session=True)
    runs.update_manifest(args.run_dir, pid=os.getpid(), trainer_pid=child.pid, status="running")

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)

    code = child.wait()
    manifest = runs.read_manifest(args.run_dir) or {}
    changes: dict = {"exit_code": code if manifest.get("exit_code") is None else manifest["exit_code"]}
    if manifest.get("status") not in FINAL:
        # The trainer did not finalise the manifest: it died without writing run_end.
        changes.update(status="crashed" if code != 0 else "finished", ended_at=time.time())
    runs.update_manifest(args.run_dir, **changes)
    return code


if __name__ == "__main__":
    sys.exit(main())
