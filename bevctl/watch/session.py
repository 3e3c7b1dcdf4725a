"""One followed run (its files and its state) and how command-line arguments name runs."""

from __future__ import annotations

import difflib
import os
import time
from pathlib import Path
from typing import Any

from bevctl.errors import UsageError
from bevctl.watch.follow import Follower
from bevctl.watch.state import RunState


class Session:
    def __init__(self, path: Path, patterns: list[str] | None = None, smooth: float = 0.6,
                 config: dict[str, Any] | None = None):
        self.path = path
        self.state = RunState(path, patterns, smooth, config)
        self.follower = Follower(path, self.state.ingest)

    def poll(self, force_scan: bool = False) -> int:
        count = self.follower.poll(force_scan)
        mtimes = []
        for tail in self.follower.tails.values():
            try:
                mtimes.append(os.stat(tail.path).st_mtime)
            except OSError:
                pass
        if mtimes:
            self.state.last_update = max(mtimes)
        return count

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        return self.state.snapshot(time.time() if now is None else now, self.follower.stats())

    def close(self) -> None:
        self.follower.close()


def resolve_targets(targets: list[str], runs_root: str | None) -> list[Path]:
    """Paths for RUN|PATH arguments: an existing file or folder as is, else a run name under the runs root;
    no argument means the newest run there."""
    from bevctl import runs

    root = Path(runs_root) if runs_root else runs.runs_root()
    if not targets:
        found = runs.list_run_dirs(root)
        if not found:
            raise UsageError(f"no runs under {root}/", fix="give a run name or a log path, or --runs-root DIR")
        return [found[0]]
    paths = []
    for target in targets:
        path = Path(target).expanduser()
        if path.exists():
            paths.append(path)
            continue
        if (root / target).is_dir():
            paths.append(root / target)
            continue
        names = [p.name for p in runs.list_run_dirs(root)]
        close = difflib.get_close_matches(target, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"no run or log named {target!r} (looked in {root}/ and the current folder)",
                         fix=f"{hint}`bevctl runs` lists runs; a log file or run folder path works too")
    return paths
