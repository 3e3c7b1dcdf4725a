"""The doctor's machinery: a check, its result, the report, and a runner that isolates every check.

A check is a plain function `fn(ctx) -> (status, message, fix)` with `status` one of ok / warn / fail / skipped.
The runner gives each check its own daemon thread and time limit: a check that hangs is reported as failed
("timed out") and abandoned, one that raises is reported as failed with the exception in one line. Neither can
stop the others from reporting. stdlib only, so `bevctl start` can run checks without paying for rich.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from bevctl.paths import WORKDIR

SCHEMA = 1
STATUSES = ("ok", "warn", "fail", "skipped")
DEFAULT_TIMEOUT = 20.0

CATEGORIES = {  # id prefix -> title, in report order
    "python": "Python & PyTorch",
    "gpu": "GPUs & CUDA",
    "launcher": "Launcher",
    "docker": "Docker & shared memory",
    "data": "Dataset",
    "weights": "Weights",
    "disk": "Disk",
}


@dataclass(frozen=True)
class Check:
    id: str
    func: Callable[["Context"], tuple]
    title: str
    timeout: float = DEFAULT_TIMEOUT
    # A failure of this check means nothing can run here (no training stack, docker required but unreachable):
    # the CLI exits 3 instead of 1, so scripts can tell "fix one thing" from "wrong machine".
    unusable_on_fail: bool = False

    @property
    def category(self) -> str:
        return self.id.split(".", 1)[0]


@dataclass
class Result:
    id: str
    category: str
    status: str
    message: str
    fix: Optional[str] = None
    seconds: float = 0.0
    unusable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    results: list[Result]
    phase: Optional[str] = None
    where: str = "host"  # "host", or "container <name>" for a report made inside the project container
    seconds: float = 0.0
    launch_where: Optional[str] = None  # where the phase trains, as the checks understood it: local, container, auto->local ...

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def warnings(self) -> list[Result]:
        return [r for r in self.results if r.status == "warn"]

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return not self.failed

    @property
    def unusable(self) -> bool:
        return any(r.unusable for r in self.failed)

    @property
    def exit_code(self) -> int:
        from bevctl.errors import CHECK_FAILED, ENVIRONMENT, OK

        return ENVIRONMENT if self.unusable else CHECK_FAILED if self.failed else OK

    def get(self, check_id: str) -> Optional[Result]:
        return next((r for r in self.results if r.id == check_id), None)

    def to_dict(self) -> dict[str, Any]:
        from bevctl import __version__

        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        return {
            "schema": SCHEMA,
            "kind": "doctor",
            "bevctl_version": __version__,
            "phase": self.phase,
            "where": self.where,
            "launch_where": self.launch_where,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "summary": counts,
            "seconds": round(self.seconds, 3),
            "checks": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        """Rebuild a report from `to_dict()` output (e.g. one made inside the container)."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"doctor report schema {data.get('schema')!r}, expected {SCHEMA}")
        fields = Result.__dataclass_fields__
        results = [Result(**{k: v for k, v in item.items() if k in fields}) for item in data.get("checks", [])]
        return cls(results, phase=data.get("phase"), where=data.get("where", "host"), seconds=data.get("seconds", 0.0),
                   launch_where=data.get("launch_where"))


class Context:
    """What checks look at: the phase (or None), where training would run, and a thread-safe memo for probes
    shared by several checks (the torch subprocess, the docker client)."""

    def __init__(self, phase: Any = None, where: Optional[str] = None, cwd: Optional[Path] = None,
                 in_container: Optional[bool] = None, env: Optional[dict] = None):
        self.phase = phase
        self.env = dict(os.environ if env is None else env)
        self.cwd = Path(cwd or os.getcwd())
        self.in_container = in_project_container(self.env) if in_container is None else in_container
        if self.in_container:
            self.where = "inside"  # training would run right here, in the project container
        elif where:
            self.where = where
        else:
            self.where = phase.launch.where if phase is not None else "unknown"
        self.auto_choice: Optional[str] = None  # what `launch.where: auto` resolves to here (see runner.resolve_auto)
        self._memo: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # ---- what the phase wants
    @property
    def gpus_wanted(self) -> int:
        """GPUs per node the phase trains on; 0 for a CPU phase or when no phase is given."""
        if self.phase is None:
            return 0
        if self.phase.train.device == "cpu":
            return 0
        return max(self.phase.launch.gpus, 1 if self.phase.train.device == "cuda" else 0)

    @property
    def gpu_phase(self) -> bool:
        return self.gpus_wanted > 0

    @property
    def runs_in(self) -> str:
        """Where the trainer runs: local, container, inside (this is the container), auto (undecided) or unknown."""
        return self.auto_choice if self.where == "auto" and self.auto_choice else self.where

    @property
    def trains_here(self) -> str:
        """Whether this environment's Python runs the trainer: "yes", "maybe" (no phase / auto undecided) or "no"."""
        return {"inside": "yes", "local": "yes", "container": "no"}.get(self.runs_in, "maybe")

    def describe_where(self) -> Optional[str]:
        if self.where == "auto":
            return f"auto->{self.auto_choice}" if self.auto_choice else "auto"
        return None if self.where == "unknown" else self.where

    @property
    def docker_needed(self) -> str:
        """"yes" when the phase runs in the container, "maybe" for auto / no phase, "no" for local or inside."""
        return {"container": "yes", "local": "no", "inside": "no"}.get(self.where, "maybe")

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.cwd / p

    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        """Compute `fn()` once per report; concurrent callers wait for the first. Exceptions are remembered too."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                try:
                    self._memo[key] = (True, fn())
                except Exception as exc:  # remembered so every check that needs the probe reports the same cause
                    self._memo[key] = (False, exc)
            good, value = self._memo[key]
        if not good:
            raise value
        return value


PROJECT_WORKDIR = WORKDIR  # where the project image keeps the checkout


def in_project_container(env: dict) -> bool:
    # /.dockerenv alone is not enough: development machines are often containers themselves. So: the explicit
    # BEVCTL_IN_CONTAINER (which `bevctl doctor --in-container` passes to `docker exec`; "0" forces host mode), or
    # a container that has the project image's workdir.
    flag = env.get("BEVCTL_IN_CONTAINER")
    if flag is not None and flag != "":
        return flag != "0"
    return os.path.exists("/.dockerenv") and os.path.isdir(PROJECT_WORKDIR)


# --------------------------------------------------------------------------------------------- selection


def select(checks: list[Check], ids: Optional[Iterable[str]] = None, categories: Optional[Iterable[str]] = None) -> list[Check]:
    """Checks matching any id, category or glob in `ids`/`categories` (all when both are empty)."""
    wanted = [w for w in list(ids or []) + list(categories or []) if w]
    if not wanted:
        return list(checks)
    chosen = []
    for want in wanted:
        hits = [c for c in checks if c.id == want or c.category == want or fnmatch.fnmatchcase(c.id, want)]
        if not hits:
            import difflib

            from bevctl.errors import UsageError

            names = [c.id for c in checks] + list(CATEGORIES)
            close = difflib.get_close_matches(want, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"unknown check {want!r}", fix=f"{hint}see `bevctl doctor --list-checks`")
        chosen += [c for c in hits if c not in chosen]
    return [c for c in checks if c in chosen]  # keep report order


# --------------------------------------------------------------------------------------------- running


def run_many(checks: list[Check], ctx: Context, timeout: Optional[float] = None) -> list[Result]:
    """All checks at once (most wait on subprocesses or sockets), each with its own deadline."""
    boxes, threads, starts = [], [], []
    for check in checks:
        box: dict[str, Any] = {}

        def target(check=check, box=box) -> None:
            try:
                box["value"] = check.func(ctx)
            except BaseException as exc:  # noqa: BLE001
                box["error"] = exc
            box["end"] = time.monotonic()

        thread = threading.Thread(target=target, name=f"doctor:{check.id}", daemon=True)
        starts.append(time.monotonic())
        thread.start()
        boxes.append(box)
        threads.append(thread)
    results = []
    for check, box, thread, start in zip(checks, boxes, threads, starts):
        limit = check.timeout if timeout is None else timeout
        thread.join(max(0.0, start + limit - time.monotonic()))
        elapsed = box.get("end", time.monotonic()) - start
        results.append(_result(check, box, thread.is_alive(), limit, elapsed))
    return results


def _result(check: Check, box: dict, hung: bool, limit: float, elapsed: float) -> Result:
    def failure(message: str, fix: str) -> Result:
        return Result(check.id, check.category, "fail", message, fix, round(elapsed, 3), check.unusable_on_fail)

    if hung:
        return failure(f"timed out after {limit:g}s (the check did not finish)",
                       f"something it waits on hangs; rerun `bevctl doctor --check {check.id} -v --timeout 120`")
    if "error" in box:
        exc = box["error"]
        text = " ".join(str(exc).split()) or "(no message)"
        return failure(f"check crashed: {type(exc).__name__}: {text[:300]}",
                       f"a bug in the check or an odd environment; report it with `bevctl doctor --check {check.id} --json`")
    value = box.get("value")
    if not (isinstance(value, tuple) and len(value) in (2, 3) and value[0] in STATUSES):
        return failure(f"check crashed: returned {value!r:.200}", "a bug in the check; report it")
    status, message = value[0], " ".join(str(value[1]).split())
    fix = value[2] if len(value) == 3 else None
    if status in ("ok", "skipped"):
        fix = None
    unusable = status == "fail" and check.unusable_on_fail
    return Result(check.id, check.category, status, message, fix, round(elapsed, 3), unusable)


def short_path(path: Any) -> str:
    """A path relative to the working directory when it is inside it (shorter report lines)."""
    text = str(path)
    try:
        rel = os.path.relpath(text)
        return rel if not rel.startswith("..") else text
    except ValueError:
        return text


def python_label() -> str:
    return f"{sys.version.split()[0]} ({short_path(sys.executable)})"
