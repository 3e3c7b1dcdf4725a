"""Names and paths a user hands bevctl, checked before anything touches the disk (standard library only).

- A run name becomes one folder under the runs root, a container label and part of a container name, so it must
  be one safe path component: ASCII letters, digits, `.`, `_` and `-`, at most 100 characters, not `.` or `..`,
  not starting with `-` (it would read as an option in the commands bevctl prints).
- Extra container mounts (`BEVCTL_EXTRA_MOUNTS="HOST:CONTAINER[:ro|rw];..."`) name an existing host path and an
  absolute container path each, no container path twice. An empty host part is refused: resolved as a relative
  path it would be the current folder, i.e. mount the checkout somewhere unexpected.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Union

from bevctl.errors import UsageError

NAME_MAX = 100
NAME_CHARS = "ASCII letters, digits, '.', '_' and '-'"
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_BAD_CHAR_RE = re.compile(r"[^A-Za-z0-9._-]")
MOUNT_FIX = "write HOST:CONTAINER[:ro] with absolute paths, entries separated by ';', e.g. /data/weights:/weights:ro"


def _shown(text: str, width: int = 40) -> str:
    """A name as it can appear inside a one-line message: quoted, escapes for control characters, clipped."""
    quoted = repr(text)
    return quoted if len(quoted) <= width else quoted[: width - 4] + "...'"


def safe_name(text: str) -> str:
    """`text` made into a valid run name (invalid characters become `-`); for suggestions and default names."""
    name = _BAD_CHAR_RE.sub("-", text).lstrip("-.")[:NAME_MAX].rstrip("-") or "run"
    return name if name not in (".", "..") else "run"


def run_name_problem(name: str) -> str | None:
    """What is wrong with `name` as a run name, or None when it is fine."""
    if not isinstance(name, str):
        return f"must be text, got {type(name).__name__}"
    if not name:
        return "is empty"
    if len(name) > NAME_MAX:
        return f"is {len(name)} characters long (at most {NAME_MAX})"
    if name in (".", ".."):
        return "is not a folder name"
    if name.startswith("-"):
        return "starts with '-' (it would read as an option)"
    if not _NAME_RE.fullmatch(name):
        bad = "".join(dict.fromkeys(_BAD_CHAR_RE.findall(name)))
        return f"contains {_shown(bad, 24)} (allowed: {NAME_CHARS})"
    return None


def validate_run_name(name: str, option: str = "--name") -> str:
    """`name` when it is one safe path component, else UsageError naming the problem and a valid alternative."""
    problem = run_name_problem(name)
    if problem is None:
        return name
    suggestion = safe_name(name)[:40].rstrip("-") if isinstance(name, str) else "run"
    rule = "" if "allowed" in problem else f" ({NAME_CHARS}, at most {NAME_MAX})"
    raise UsageError(f"run name {_shown(str(name))} {problem}", fix=f"use a plain name such as {option} {suggestion}{rule}")


# ---------------------------------------------------------------------------------------------------- mounts


def validate_mount(entry: str, source: str = "BEVCTL_EXTRA_MOUNTS") -> tuple[str, str, str]:
    """One `HOST:CONTAINER[:ro|rw]` entry as (absolute host path, normalised container path, mode)."""
    where = f"{source} entry {_shown(entry, 60)}"
    if any(ord(c) < 32 for c in entry):
        raise UsageError(f"{where} contains a control character", fix=MOUNT_FIX)
    parts = entry.split(":")
    if len(parts) not in (2, 3):
        raise UsageError(f"{where} is not HOST:CONTAINER[:ro]", fix=MOUNT_FIX)
    host, target, *rest = parts
    mode = rest[0] if rest else "rw"
    if mode not in ("ro", "rw"):
        raise UsageError(f"{where}: mode {mode!r} is neither ro nor rw", fix=MOUNT_FIX)
    if not host:
        raise UsageError(f"{where} has an empty host path (it would mount the current folder)", fix=MOUNT_FIX)
    host = os.path.expanduser(host)
    if not os.path.isabs(host):
        raise UsageError(f"{where}: host path {host!r} is relative", fix=MOUNT_FIX)
    if not os.path.exists(host):
        raise UsageError(f"{where}: host path {host} does not exist",
                         fix="create it or correct the path (docker would create it empty, as root)")
    if not target or not target.startswith("/"):
        raise UsageError(f"{where}: container path {target!r} is not absolute", fix=MOUNT_FIX)
    target = os.path.normpath(target)
    if target.startswith("//"):
        target = "/" + target.lstrip("/")
    if target == "/":
        raise UsageError(f"{where}: container path / would hide the whole image", fix=MOUNT_FIX)
    return os.path.normpath(host), target, mode


def validate_mounts(spec: Union[str, Iterable[str]], taken: Iterable[str] = (),
                    source: str = "BEVCTL_EXTRA_MOUNTS") -> list[tuple[str, str, str]]:
    """Every entry of `spec` (a `;`-separated string or a list of entries) validated; a container path may appear
    once, and not at all when it is in `taken` (the mounts bevctl makes itself: workdir, runs, dataset)."""
    entries = spec.split(";") if isinstance(spec, str) else list(spec)
    seen = {os.path.normpath(t): "bevctl's own mounts" for t in taken}
    mounts = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        host, target, mode = validate_mount(entry, source)
        if target in seen:
            raise UsageError(f"{source} entry {_shown(entry, 60)}: container path {target} is already mounted "
                             f"(by {seen[target]})", fix="mount each container path once")
        seen[target] = _shown(entry, 60)
        mounts.append((host, target, mode))
    return mounts
