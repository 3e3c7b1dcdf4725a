"""Stopping a `torchpack dist-run` (mpirun) job so its ranks save: signal the ranks, never mpirun.

mpirun, signalled, forwards the signal and kills its ranks about a second later, before a final checkpoint. So a
stop goes to the ranks themselves; each finishes its step and saves (rank 0 tells the others through the stop
collective, including ranks on other nodes), and mpirun ends on its own once they have exited. `bevctl.supervise`
does this for a local run; under Slurm the batch script's TERM trap runs
`python -m bevctl.launchers.mpi_stop PID -- PROGRAM...` (PID: the torchpack process it started).
"""

from __future__ import annotations

import os
import signal
import sys

from bevctl.runs.process import cmdline, parent_pid


def mpi_program(command: list[str]) -> list[str] | None:
    """The per-rank program of a `torchpack dist-run [-np N] [-H hosts] PROGRAM...` command; None for any other."""
    if len(command) < 2 or os.path.basename(command[0]) != "torchpack" or command[1] != "dist-run":
        return None
    rest = command[2:]
    while len(rest) >= 2 and rest[0] in ("-np", "-H"):
        rest = rest[2:]
    return rest or None


def mpi_ranks(root: int, program: list[str]) -> list[int]:
    """The processes under `root` that run `program` and whose parent does not: the ranks, not their DataLoader
    workers (forked, with the same command line). /proc only; [] where it cannot be read."""
    parent, argvs = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            ppid, argv = parent_pid(pid), cmdline(pid)
            if ppid is not None and argv is not None:
                parent[pid], argvs[pid] = ppid, argv

    def under_root(pid: int) -> bool:
        seen = set()
        while pid in parent and pid not in seen:
            seen.add(pid)
            pid = parent[pid]
            if pid == root:
                return True
        return False

    return sorted(pid for pid, argv in argvs.items()
                  if argv == program and argvs.get(parent[pid]) != program and under_root(pid))


def signal_ranks(root: int, program: list[str], signum: int) -> list[int]:
    """Send `signum` to the ranks under `root`; returns their pids ([]: none found, nothing sent)."""
    ranks = mpi_ranks(root, program)
    for pid in ranks:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    return ranks


def main(argv: list[str] | None = None) -> int:
    """`python -m bevctl.launchers.mpi_stop PID -- PROGRAM...`: SIGTERM to the ranks under PID, or to PID itself
    when none has started yet (mpirun then ends the job, with nothing to save)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: python -m bevctl.launchers.mpi_stop PID -- PROGRAM...", file=sys.stderr)
        return 2
    root = int(args[0])
    if not signal_ranks(root, args[2:], signal.SIGTERM):
        try:
            os.kill(root, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
