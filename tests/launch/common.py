"""Helpers of the launcher tests: the CLI's view of runs, waiting on a status, reading events."""

import json
import time
from pathlib import Path

from tests.conftest import run_cli

# A demo run of a few quick steps: no evaluation, a log line per step, no loader workers, one process (the demo's two
# processes under torchrun are exercised by the stop/resume test and the demo test).
FAST = ["--set", "train.eval_interval=0", "--set", "train.log_interval=1", "--set", "data.workers=0",
        "--set", "launch.cpu_processes=1"]


def runs_json(cwd: Path, env: dict | None = None) -> dict[str, dict]:
    result = run_cli("runs", "--json", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)["runs"]}


def wait_status(cwd: Path, name: str, wanted: tuple[str, ...], timeout: float = 240, env: dict | None = None):
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        info = runs_json(cwd, env).get(name)
        if info:
            seen.append(info["status"])
            if info["status"] in wanted:
                return info, seen
        time.sleep(0.5)
    raise AssertionError(f"{name} never reached {wanted}; statuses seen: {sorted(set(seen))}")


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_event(run_dir: Path, kind: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(run_dir) if e["kind"] == kind]
        if found:
            return found[-1]
        time.sleep(0.5)
    console = run_dir / "console.out"
    tail = console.read_text()[-2000:] if console.exists() else "no console.out"
    raise AssertionError(f"no {kind} event in {run_dir} after {timeout}s; console:\n{tail}")
