"""Which process is which: a pid plus its start time and command line, so a reused pid is never mistaken for
the run's supervisor. Linux /proc; elsewhere identity is unknown and callers fall back to "is the pid alive"."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional


def _stat_fields(pid: int) -> Optional[list[str]]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return text.rsplit(")", 1)[1].split()


def process_identity(pid: int) -> Optional[dict[str, Any]]:
    """{"pid", "start_time" (clock ticks after boot), "cmdline"} of a live process; None when it is gone or the
    system has no /proc."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] == "Z":
        return None
    argv = cmdline(pid)
    if argv is None:
        return None
    return {"pid": pid, "start_time": int(fields[19]), "cmdline": argv}


def cmdline(pid: int) -> Optional[list[str]]:
    """The process's argv; None when it is gone or /proc cannot say."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def parent_pid(pid: int) -> Optional[int]:
    """The process's parent pid; None when it is gone or /proc cannot say."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else None


def identity_matches(recorded: dict[str, Any]) -> bool:
    """The recorded process is still the one running under that pid (same start time and command line)."""
    pid = recorded.get("pid")
    if not isinstance(pid, int):
        return False
    current = process_identity(pid)
    if current is None:
        return False
    if recorded.get("start_time") is not None and recorded["start_time"] != current["start_time"]:
        return False
    return not recorded.get("cmdline") or list(recorded["cmdline"]) == current["cmdline"]


def pid_alive(pid: int) -> bool:
    """The pid names a live (not zombie) process, whoever's it is."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"
