"""Shared checks for the hostile-input tests (issue 15): run bevctl as a user would and assert what they see.

Every hostile case asserts the same four things, so they live here once:

- the exit code (2 bad input, 1 a check failed, 3 environment unusable);
- exactly one message line on stderr, `error: <what is wrong> (fix: <what to do>)`, naming what is wrong;
- no "Traceback" and no "internal error" anywhere in the output;
- every file that existed before the command is byte-identical afterwards (new files may appear).

Typical use::

    from tests.safety.hostile import hostile

    def test_name_with_slash(tmp_path):
        hostile("start", "demo", "--name", "a/b", "--yes", cwd=tmp_path, code=2, says=["a/b", "--name"])

`hostile` snapshots `cwd` (when it is not the repository) and every path in `keep` before the command and compares
after it. For commands run another way (several processes at once, `Popen`), use `Snapshot.take(...)`,
`expect_refusal(result, ...)` and `Snapshot.assert_unchanged()` directly. The snapshot never opens anything but
regular files: a FIFO or socket is recorded by kind only (reading one would block), a symlink by its target.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from tests.conftest import BIN, ROOT, run_cli

PathLike = Union[str, Path]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry(path: Path) -> Optional[tuple[str, str]]:
    """(kind, identity) of one path without following symlinks or opening anything but regular files."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "symlink", os.readlink(path)
    if stat.S_ISDIR(st.st_mode):
        return "dir", ""
    if stat.S_ISREG(st.st_mode):
        try:
            return "file", f"{st.st_size}:{_digest(path)}"
        except PermissionError:
            # an unreadable file (chmod 000 in a test): compare size and mtime instead of bytes
            return "file", f"{st.st_size}:mtime={st.st_mtime_ns}"
    if stat.S_ISFIFO(st.st_mode):
        return "fifo", ""
    if stat.S_ISSOCK(st.st_mode):
        return "socket", ""
    return "other", str(stat.S_IFMT(st.st_mode))


def _walk(root: Path) -> Iterable[Path]:
    yield root
    if root.is_symlink() or not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


@dataclass
class Snapshot:
    """Every path under some roots, with its kind and (for regular files) size and sha256, at one moment."""

    roots: tuple[Path, ...]
    entries: dict[Path, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def take(cls, *roots: PathLike) -> "Snapshot":
        snap = cls(tuple(Path(r) for r in roots))
        for root in snap.roots:
            for path in _walk(root):
                found = _entry(path)
                if found is not None:
                    snap.entries[path] = found
        return snap

    def changes(self) -> list[str]:
        """What happened to the paths that existed at `take`: missing, replaced by another kind, or new bytes."""
        problems = []
        for path, (kind, ident) in sorted(self.entries.items()):
            now = _entry(path)
            if now is None:
                problems.append(f"{path}: deleted (was a {kind})")
            elif now[0] != kind:
                problems.append(f"{path}: was a {kind}, now a {now[0]}")
            elif now[1] != ident:
                problems.append(f"{path}: {kind} changed ({ident[:24]} -> {now[1][:24]})")
        return problems

    def new_paths(self) -> list[Path]:
        """Paths under the roots that did not exist at `take`."""
        return sorted(p for root in self.roots for p in _walk(root) if p not in self.entries and os.path.lexists(p))

    def assert_unchanged(self) -> None:
        problems = self.changes()
        assert not problems, "pre-existing files changed:\n  " + "\n  ".join(problems[:20])


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def expect_refusal(
    result: subprocess.CompletedProcess,
    code: int,
    says: Union[str, Sequence[str]] = (),
    *,
    fix: bool = True,
    lines: Optional[int] = 1,
) -> str:
    """Assert a refused command: exit `code`, one `error:` line (containing every `says` fragment, and a fix
    unless `fix=False`), no traceback, no internal error. `lines=None` allows other stderr output (a preflight
    table) before the single error line. Returns the error line."""
    out = (result.stdout or "") + (result.stderr or "")
    shown = f"exit {result.returncode}\n--- stderr\n{result.stderr}\n--- stdout\n{result.stdout}"
    assert "Traceback" not in out, shown
    assert "internal error" not in out, shown
    assert result.returncode == code, f"expected exit {code}; {shown}"
    stderr = error_lines(result.stderr or "")
    if lines is not None:
        assert len(stderr) == lines, f"expected {lines} stderr line(s); {shown}"
    errors = [line for line in stderr if line.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one 'error:' line; {shown}"
    line = errors[0]
    if fix:
        assert "(fix: " in line and line.rstrip().endswith(")"), f"no fix in the error line; {shown}"
    for fragment in [says] if isinstance(says, str) else says:
        assert fragment in line, f"{fragment!r} not in the error line; {shown}"
    return line


def hostile(
    *args: str,
    code: int = 2,
    says: Union[str, Sequence[str]] = (),
    cwd: Optional[PathLike] = None,
    env: Optional[dict] = None,
    input: Optional[str] = "",
    keep: Sequence[PathLike] = (),
    within: Optional[float] = None,
    timeout: int = 120,
    fix: bool = True,
    lines: Optional[int] = 1,
) -> subprocess.CompletedProcess:
    """Run `bevctl *args` as a user would and assert a clean refusal (see `expect_refusal`) that changed no
    pre-existing file under `cwd` (unless it is the repository) or `keep`; `within` caps the wall time (s)."""
    roots = [Path(p) for p in keep]
    if cwd is not None and Path(cwd).resolve() != ROOT:
        roots.append(Path(cwd))
    snap = Snapshot.take(*roots)
    started = time.monotonic()
    result = run_cli(*args, cwd=Path(cwd) if cwd else None, env=env, input=input, timeout=timeout)
    elapsed = time.monotonic() - started
    expect_refusal(result, code, says, fix=fix, lines=lines)
    snap.assert_unchanged()
    if within is not None:
        assert elapsed < within, f"took {elapsed:.2f} s (limit {within} s): {result.stderr}"
    return result


def popen_cli(*args: str, cwd: Optional[PathLike] = None, env: Optional[dict] = None) -> subprocess.Popen:
    """`bevctl *args` started in the background (for cases that need two real processes at once)."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.Popen([str(BIN / "bevctl"), *args], cwd=cwd or ROOT, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    """A background `popen_cli` process, waited for, as a CompletedProcess for `expect_refusal`."""
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05) -> bool:
    """Poll `predicate()` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)
