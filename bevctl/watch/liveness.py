"""Is a run that says it is running still alive? Asked of the run contract's one status authority,
`bevctl.runs.run_status` (the run lock, the supervisor's process identity, the container through the Docker
module, the Slurm job), at most every few seconds and only while run.json says created/running and no run_end
was written. Watch itself never talks to Docker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LIVE = ("running", "created", None)


def gone_alert(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """An error alert when the run's process, container or job is gone without a run_end, else None."""
    from bevctl import runs

    status = runs.run_status(run_dir)
    if status.status != "crashed":
        return None
    reason = status.reason or "its process is gone"
    kind = "container_gone" if manifest.get("container_id") else "job_gone" if manifest.get("job_id") else \
        "process_gone"
    code = f", exit code {status.exit_code}" if status.exit_code not in (None, 0) else ""
    return {"level": "error", "kind": kind, "message": f"{reason} and the run never wrote run_end (crashed{code})"}
