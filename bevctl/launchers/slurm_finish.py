"""The last line of a bevctl Slurm job: `python -m bevctl.launchers.slurm_finish RUN_DIR EXIT_CODE` records the exit
code in run.json, and the end status when the trainer wrote none (it died hard, or it is a checkout's script that
knows nothing of run.json), as `bevctl.supervise` does for local runs. Its own module: `bevctl.runs` asks
`bevctl.launchers.slurm` for job states, so that module must not import `bevctl.runs`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bevctl import runs


def finish(run_dir: Path, code: int) -> None:
    manifest = runs.read_manifest(run_dir) or {}
    changes: dict = {"exit_code": code if manifest.get("exit_code") is None else manifest["exit_code"]}
    if manifest.get("status") not in runs.FINAL_STATUSES:
        changes.update(status="finished" if code == 0 else "crashed", ended_at=time.time())
    runs.update_manifest(run_dir, **changes)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or not args[1].lstrip("-").isdigit():
        print("usage: python -m bevctl.launchers.slurm_finish RUN_DIR EXIT_CODE", file=sys.stderr)
        return 2
    finish(Path(args[0]), int(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
