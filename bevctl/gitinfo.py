"""The checkout's git commit, for run manifests and image labels. Stdlib only."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit(root: Path) -> str | None:
    """HEAD's commit, with `-dirty` when tracked files changed; None outside git (or without git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root, capture_output=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return None
