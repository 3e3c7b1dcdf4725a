"""Start a planned run, detached: take the run directory (created whole, or locked for a resume; see
`bevctl.runs.claim`), write run.json, then hand the run to its supervisor (local: `bevctl.supervise`, which keeps
the run lock) or to a container. Nothing here imports torch: the trainer runs in its own process (or container).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bevctl import gitinfo, runs
from bevctl.preflight import RunPlan

# --------------------------------------------------------------------------------------------- launch


def run_manifest(plan: RunPlan, command_line: list[str], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    config = plan.phase.model_dump(mode="json")
    manifest = runs.new_manifest(
        plan.name, plan.phase.name, config,
        command=plan.command, bevctl_command=command_line, where=plan.where, git_commit=gitinfo.commit(_project_root()),
        image=plan.phase.container.image if plan.where == "container" else None,
        nproc_per_node=plan.nproc, nnodes=plan.phase.launch.nnodes, launcher=plan.phase.launch.launcher,
    )
    if plan.resumed_from:
        manifest["resumed_from"] = plan.resumed_from
    if previous:
        manifest["previous_attempts"] = previous.get("previous_attempts", []) + [
            {k: previous.get(k) for k in ("started_at", "ended_at", "status", "exit_code", "pid", "container_id")}]
        for key in ("saved_checkpoints", "resumed_from"):  # what this run wrote stays its own across attempts
            if previous.get(key) and key not in manifest:
                manifest[key] = previous[key]
    return manifest


def claim(plan: RunPlan, command_line: list[str]) -> runs.RunLock:
    """The run directory, locked for this launch: created whole for a new run, or locked (and refused when another
    process runs it) for a resume; run.json written."""
    if plan.resuming and plan.run_dir.is_dir():
        lock = runs.claim_run_dir(plan.run_dir)
        runs.write_manifest(plan.run_dir, run_manifest(plan, command_line, runs.read_manifest(plan.run_dir)))
        return lock
    _, lock = runs.create_run_dir(plan.run_dir.parent, plan.run_dir.name, run_manifest(plan, command_line))
    return lock


def launch(plan: RunPlan, command_line: list[str]) -> dict[str, Any]:
    """Start the run detached; returns the manifest (pid or container id recorded). When the start itself fails
    (no image, docker refuses), a run directory made for it is removed and a resumed run's manifest restored."""
    existed = plan.run_dir.is_dir()
    previous = runs.read_manifest(plan.run_dir) if existed else None
    lock = claim(plan, command_line)
    try:
        if plan.where == "container":
            return _launch_container(plan)
        if plan.where == "slurm":
            return _launch_slurm(plan)
        return _launch_local(plan, lock)
    except BaseException:
        if previous is not None:
            runs.write_manifest(plan.run_dir, previous)
        elif not existed:
            shutil.rmtree(plan.run_dir, ignore_errors=True)  # only run.json and .lock: what claim wrote
        raise
    finally:
        lock.release()  # a local run's supervisor holds its own copy of the lock from here on


def _launch_local(plan: RunPlan, lock: runs.RunLock) -> dict[str, Any]:
    out = open(plan.run_dir / runs.CONSOLE, "ab")
    from bevctl import launchers

    env = {**os.environ, "PYTHONUNBUFFERED": "1", **plan.env}
    project = _project_root()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bevctl.supervise", "--run-dir", str(plan.run_dir.resolve()),  # cwd may be a checkout
         "--lock-fd", str(lock.fd), "--",
         *plan.command],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        cwd=launchers.workdir(plan.phase) or os.getcwd(), pass_fds=(lock.fd,),  # a checkout runs inside itself
    )
    out.close()
    # The supervisor records its identity itself; the pid is known now, for the message and for `runs`.
    return runs.update_manifest(plan.run_dir, pid=proc.pid, where="local")


def _launch_container(plan: RunPlan) -> dict[str, Any]:
    from bevctl import docker

    phase = plan.phase
    docker.require_image(phase.container.image)
    # Not the default `bevfusion` name: that one is the interactive container of `bevctl shell`.
    from bevctl import launchers

    repo = launchers.workdir(phase)  # a checkout is mounted where it lives on the host, and runs there
    mounts = [(str(repo), str(repo), "rw")] if repo is not None else []
    if repo is not None and phase.load_from:
        folder = str(Path(phase.load_from).resolve().parent)
        mounts.append((folder, folder, "ro"))
    spec = docker.run_spec(phase, plan.command, extra_mounts=mounts, env=plan.env, run_name=plan.name,
                           name=f"{phase.container.name}-{plan.name}", runs_dir=plan.run_dir.parent.resolve(),
                           network_mode=phase.container.network,
                           **({"gpus": plan.docker_gpus} if plan.docker_gpus is not None else {}))
    if repo is not None:
        spec["working_dir"] = str(repo)
    container_id = docker.run_detached(spec)
    return runs.update_manifest(plan.run_dir, container_id=container_id, status="running", where="container")


def _launch_slurm(plan: RunPlan) -> dict[str, Any]:
    """Write job.sbatch and submit it; the job id goes into run.json (the run is `created` until the trainer starts)."""
    from bevctl.launchers import slurm

    script = slurm.write_script(plan.run_dir, plan.batch_script or "")
    job_id = slurm.submit(script)
    return runs.update_manifest(plan.run_dir, job_id=job_id, where="slurm")


def _project_root() -> Path:
    return Path(__file__).resolve().parents[1]
