"""An existing BEVFusion checkout as the trainer: the phase's `trainer: {repo, script, config, args, manifest}`.

bevctl starts `python <script> <config> [--load_from W] [--resume_from C] --run-dir <run dir> <args>` in the
checkout (the original's command line: its tools/train.py parses `config` and `--run-dir` and applies any other
`--key value` to the config), so users keep their code, GCA patch and configs, and still get the preflight,
run.json and `bevctl watch` (which follows the mmcv/mmengine log the script writes into the run directory).

load_from is checked like the bundled trainer's: against `trainer.manifest` (a key manifest in the
bevctl/manifests format, e.g. written by `python -m model.manifest` from the checkout's model) when given, else
against the bundled model the phase's `model:` names (`full` is the original camera+LiDAR BEVFusion).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from bevctl.errors import UsageError

# Interpreter of the checkout's environment (the user's conda env, or the image's), not bevctl's own.
PYTHON = "python"
LATEST = "latest.pth"


def _abs(path: str) -> str:
    return path if os.path.isabs(path) else os.path.abspath(path)


def program(phase: Any, run_dir: str) -> list[str]:
    """The checkout's training command; paths from the user's working directory are made absolute, as the
    script starts inside the checkout."""
    trainer = phase.trainer
    cmd = [PYTHON, trainer.script, trainer.config]
    if phase.resume:
        resume = os.path.join(run_dir, LATEST) if phase.resume == "auto" else phase.resume
        cmd += ["--resume_from", _abs(resume)]
    elif phase.load_from:
        cmd += ["--load_from", _abs(phase.load_from)]
    return cmd + ["--run-dir", _abs(run_dir), *trainer.args]


def manifest_for(phase: Any) -> str | None:
    """The model side load_from is compared with: the user's key manifest, else None (the phase's `model:`)."""
    trainer = getattr(phase, "trainer", None)
    if trainer is None or not trainer.manifest:
        return None
    return _abs(os.path.expanduser(trainer.manifest))


def problems(phase: Any) -> list[tuple[str, str, str]]:
    """(label, what is wrong, how to fix it) for a checkout that cannot run; empty when it looks runnable."""
    trainer = phase.trainer
    repo = Path(trainer.repo).expanduser()
    if not repo.is_dir():
        return [("trainer.repo", f"{trainer.repo} is not a folder",
                 "point trainer.repo at your BEVFusion checkout (--set trainer.repo=PATH)")]
    found = []
    for label, rel, fix in (
        ("trainer.script", trainer.script, "set trainer.script to the training script, relative to the checkout (tools/train.py)"),
        ("trainer.config", trainer.config, "set trainer.config to the config file, relative to the checkout (configs/...yaml)"),
    ):
        if os.path.isabs(rel):
            found.append((label, f"{rel} is absolute", f"{fix}; it must live inside {repo}"))
        elif not (repo / rel).is_file():
            found.append((label, f"{rel} not found in {repo}", fix))
    if trainer.manifest and not Path(manifest_for(phase) or "").is_file():
        found.append(("trainer.manifest", f"{trainer.manifest} not found",
                      "write it with python -m model.manifest, or drop trainer.manifest to check against the bundled model"))
    if shutil.which(PYTHON) is None:
        found.append(("trainer python", f"no `{PYTHON}` on PATH to run the checkout with",
                      "activate the checkout's environment (conda activate ...) before bevctl start"))
    return found


def require_runnable(phase: Any) -> None:
    """Refuse a checkout that cannot run, with the first problem as one line."""
    found = problems(phase)
    if found:
        label, detail, fix = found[0]
        raise UsageError(f"{label}: {detail}", fix=fix)
