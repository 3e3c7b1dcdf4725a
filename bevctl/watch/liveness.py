"""Is a run that says it is running still alive? Asked of the run contract's one status authority
(`bevctl.runs.run_status`: pid identity on this host, or the container's state through the Docker module), at most
every few seconds, and only while run.json says created/running and no run_end was written."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

LIVE = ("running", "created", None)


def gone_alert(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """An error alert when the run's process or container is gone without a run_end, else None."""
    from bevctl import runs

    decide = getattr(runs, "run_status", None)
    if decide is not None:
        status = decide(run_dir)
        state = getattr(status, "status", status)
        if state != "crashed":
            return None
        reason = getattr(status, "reason", None) or "its process is gone and the run never wrote run_end"
        kind = "container_gone" if manifest.get("container_id") else "process_gone"
        return {"level": "error", "kind": kind, "message": f"{reason} (crashed)"}
    return _local_check(manifest)


def _local_check(manifest: dict[str, Any]) -> dict[str, Any] | None:
    pid, host, container = manifest.get("pid"), manifest.get("host"), manifest.get("container_id")
    if container:
        state = container_state(str(container))
        if state is not None and state != "running":
            return {"level": "error", "kind": "container_gone",
                    "message": f"container {str(container)[:12]} is {state} and the run never wrote run_end (crashed)"}
        return None
    if isinstance(pid, int) and host == socket.gethostname() and manifest.get("status") == "running":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return {"level": "error", "kind": "process_gone",
                    "message": f"process {pid} is gone and the run never wrote run_end (crashed)"}
        except PermissionError:
            pass
    return None


def container_state(container_id: str) -> str | None:
    """The container's state, or None when docker is not reachable (skipped quietly)."""
    try:
        import docker  # noqa: PLC0415 - only runs that live in containers pay for it
        from docker.errors import NotFound
    except Exception:
        return None
    try:
        client = docker.from_env(timeout=3)
        try:
            return str(client.containers.get(container_id).status)
        except NotFound:
            return "removed"
        finally:
            client.close()
    except Exception:
        return None
