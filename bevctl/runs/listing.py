"""Which run directories a runs folder holds. A broken run (unreadable run.json) is listed, never hides others."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bevctl.runs.layout import EVENTS, MANIFEST, runs_root
from bevctl.runs.manifest import read_manifest


def list_run_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Run directories under root (those with run.json or events.jsonl), newest first. Folders whose name starts
    with a dot are bevctl's own (a run being created, build logs)."""
    base = Path(root) if root is not None else runs_root()
    try:
        children = list(base.iterdir())
    except OSError:
        return []
    found = []
    for d in children:
        try:
            if not d.name.startswith(".") and d.is_dir() and ((d / MANIFEST).exists() or (d / EVENTS).exists()):
                found.append(d)
        except OSError:
            continue
    return sorted(found, key=_started, reverse=True)


def list_runs(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """`describe_run` of every run directory, newest first (an unreadable one as status "unreadable")."""
    from bevctl.runs.status import describe_run

    return [describe_run(d) for d in list_run_dirs(root)]


def _started(run_dir: Path) -> float:
    manifest = read_manifest(run_dir)
    started = manifest.get("started_at") if manifest else None
    if isinstance(started, (int, float)) and not isinstance(started, bool):
        return float(started)
    for path in (run_dir / EVENTS, run_dir / MANIFEST, run_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0
