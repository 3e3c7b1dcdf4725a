"""run.json: written atomically, updated under a lock, read as a dict (stdlib) or as a `RunManifest` (typed)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from bevctl.atomic import atomic_write_json
from bevctl.runs.layout import MANIFEST, SCHEMA_VERSION

if TYPE_CHECKING:
    from bevctl.runs.models import RunManifest


class ManifestUnreadable(Exception):
    """run.json exists but is not a readable run manifest; `reason` says why in a few words."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def new_manifest(name: str, phase: str, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": name,
        "phase": phase,
        "config": config,
        "command": None,
        "cwd": os.getcwd(),
        "git_commit": None,
        "image": None,
        "container_id": None,
        "pid": None,
        "host": socket.gethostname(),
        "where": "local",
        "started_at": time.time(),
        "ended_at": None,
        "status": "created",
        "exit_code": None,
    }
    manifest.update(fields)
    return manifest


def write_manifest(run_dir: str | os.PathLike, manifest: Any) -> None:
    if hasattr(manifest, "model_dump"):
        manifest = manifest.model_dump(mode="json", exclude_unset=False)
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest as a dict, or None when the run has none or it is unreadable (use `load_manifest` to know why)."""
    try:
        return _read_raw(Path(run_dir) / MANIFEST)
    except (FileNotFoundError, ManifestUnreadable):
        return None


def load_manifest(run_dir: str | os.PathLike) -> "RunManifest | None":
    """The typed manifest; None when there is no run.json; ManifestUnreadable when it is corrupt or invalid."""
    from pydantic import ValidationError

    from bevctl.runs.models import RunManifest

    path = Path(run_dir) / MANIFEST
    try:
        data = _read_raw(path)
    except FileNotFoundError:
        return None
    try:
        return RunManifest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise ManifestUnreadable(path, f"{where}: {error['msg']}") from None


def _read_raw(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(16 * 1024 * 1024 + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ManifestUnreadable(path, exc.strerror or type(exc).__name__) from None
    if len(raw) > 16 * 1024 * 1024:
        raise ManifestUnreadable(path, "larger than 16 MiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestUnreadable(path, "not UTF-8 text") from None
    except ValueError as exc:
        raise ManifestUnreadable(path, f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ManifestUnreadable(path, f"a JSON {type(data).__name__}, not an object")
    return data


@contextlib.contextmanager
def _update_lock(run_dir: Path) -> Iterator[None]:
    # The launcher, the supervisor and the trainer each update run.json; without this a read-modify-write of one
    # can drop another's change. The lock is on the directory itself (run.json is replaced, so its inode changes).
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_manifest(run_dir: str | os.PathLike, **changes: Any) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _update_lock(run_dir):
        manifest = read_manifest(run_dir) or {"schema": SCHEMA_VERSION, "name": run_dir.name}
        manifest.update(changes)
        write_manifest(run_dir, manifest)
    return manifest


def record_saved_checkpoint(run_dir: str | os.PathLike, name: str) -> list[str]:
    """Add a checkpoint file name to the run's `saved_checkpoints` (what pruning may delete); returns the list."""
    run_dir = Path(run_dir)
    with _update_lock(run_dir):
        manifest = read_manifest(run_dir) or {"schema": SCHEMA_VERSION, "name": run_dir.name}
        saved = [s for s in manifest.get("saved_checkpoints") or [] if isinstance(s, str)]
        if name not in saved:
            saved.append(name)
        manifest["saved_checkpoints"] = saved
        write_manifest(run_dir, manifest)
    return saved


def forget_saved_checkpoints(run_dir: str | os.PathLike, names: list[str]) -> None:
    run_dir = Path(run_dir)
    with _update_lock(run_dir):
        manifest = read_manifest(run_dir)
        if not manifest:
            return
        manifest["saved_checkpoints"] = [s for s in manifest.get("saved_checkpoints") or [] if s not in names]
        write_manifest(run_dir, manifest)
