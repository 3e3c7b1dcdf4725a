"""`launch.where: slurm`: the run as a Slurm batch job, written to `runs/<name>/job.sbatch` and submitted with
`sbatch --parsable`; the job id goes into run.json (`job_id`).

The script asks for `launch.nnodes` nodes with one task each; `srun` starts one torchrun per node, all meeting at
a c10d rendezvous on the allocation's first node (`--rdzv-id=$SLURM_JOB_ID`, so a resubmitted job never joins an
old one). With `launch.launcher: torchpack` the script asks one task per rank (mpirun takes its slots from the
allocation) and runs `torchpack dist-run -H <allocation hosts>` itself, as mpirun launches its remote ranks
through Slurm. `launch.slurm.container_runtime` runs the trainer in
the project image (pyxis: `srun --container-image`; apptainer: `apptainer exec --nv`), with the project, the
checkout, the runs folder and the data mounted at the same paths.

State comes from `squeue` (jobs the controller still remembers, finished ones for MinJobAge) and else `sacct`
(clusters with accounting); `job_state` returns Slurm's own state name (RUNNING, PENDING, COMPLETED, CANCELLED,
FAILED, TIMEOUT, ...) or None when Slurm cannot say. Stopping sends SIGTERM to the job's steps
(`scancel --signal=TERM`; for torchpack, which runs outside a step, the batch shell alone, whose trap signals the
MPI ranks and not mpirun, see `bevctl.launchers.mpi_stop`): the trainer finishes its
step and saves, exactly as under `bevctl stop` on a host.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bevctl.errors import CheckFailed, EnvironmentUnusable, UsageError

SCRIPT = "job.sbatch"
# Slurm's states in which the job's processes may still run (or are about to).
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING",
          "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD")
# The script's own variables; any other `$`, backquote or quote in a word (a path, a trainer argument) stays literal.
_JOB_VAR = r"\$(?:SLURM_NNODES|SLURM_JOB_ID|head|hosts|code|child)\b"
_EXPANDABLE = re.compile(rf"^(?:[^$`\"\\]|{_JOB_VAR})*{_JOB_VAR}(?:[^$`\"\\]|{_JOB_VAR})*$")
_TIMEOUT = 30


def _sh(arg: str) -> str:
    """Quote one word; words that use the job's variables ($SLURM_*, $head) stay expandable."""
    if _EXPANDABLE.match(arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def _join(argv: list[str]) -> str:
    return " ".join(_sh(a) for a in argv)


def gpus_per_node(phase: Any) -> int:
    spec = phase.launch.slurm
    return phase.launch.gpus if spec.gpus_per_node is None else spec.gpus_per_node


def processes_per_node(phase: Any) -> int:
    """One trainer process per GPU; on CPU nodes `launch.cpu_processes`."""
    return gpus_per_node(phase) or phase.launch.cpu_processes


def sbatch_options(phase: Any, run_name: str, run_dir: Path) -> list[str]:
    """The `#SBATCH` options: nodes and tasks from `launch`, the rest from `launch.slurm`."""
    spec = phase.launch.slurm
    gpus = gpus_per_node(phase)
    # torchrun: one task per node, which starts the node's workers. mpirun: one task per rank, because inside an
    # allocation it takes its slots from Slurm, and -H host:N cannot exceed them.
    tasks = processes_per_node(phase) if phase.launch.launcher == "torchpack" else 1
    options = [f"--job-name=bevctl-{run_name}", f"--nodes={phase.launch.nnodes}", f"--ntasks-per-node={tasks}",
               f"--output={run_dir / 'console.out'}", "--open-mode=append"]
    if gpus > 0:
        options.append(f"--gpus-per-node={gpus}")
    if spec.cpus_per_task:
        options.append(f"--cpus-per-task={spec.cpus_per_task}")
    for flag, value in (("partition", spec.partition), ("account", spec.account), ("time", spec.time)):
        if value:
            options.append(f"--{flag}={value}")
    for extra in spec.extra_sbatch:
        options.append(extra if extra.startswith("-") else f"--{extra}")
    return options


def _mounts(phase: Any, run_dir: Path, project: Path) -> list[str]:
    """Host folders the containerised trainer needs, each mounted at its own path."""
    from bevctl.launchers import workdir

    paths = [project, run_dir.parent, Path(phase.data.root).resolve()]
    repo = workdir(phase)
    if repo is not None:
        paths.append(repo)
    if phase.load_from:
        paths.append(Path(phase.load_from).resolve().parent)
    unique: list[str] = []
    for path in paths:
        if str(path) not in unique:
            unique.append(str(path))
    return unique


def node_command(phase: Any, run_dir: Path, in_container: bool) -> list[str]:
    """What one node runs: the trainer under torchrun (c10d rendezvous on the first node) or as one process."""
    from bevctl import launchers

    python = "python" if in_container else sys.executable
    program = launchers.program(phase, str(run_dir), python)
    nproc = processes_per_node(phase)
    if nproc == 1 and phase.launch.nnodes == 1:
        return program
    torchrun = ["torchrun"] if in_container else [sys.executable, "-m", "torch.distributed.run"]
    port = phase.launch.slurm.rdzv_port
    return [*torchrun, "--nnodes=$SLURM_NNODES", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=$head:{port}", "--rdzv-id=$SLURM_JOB_ID", *program[1:]]


def _container_prefix(phase: Any, mounts: list[str], workdir: str) -> tuple[list[str], list[str]]:
    """(srun options, command prefix) that put the trainer in the project image."""
    spec = phase.launch.slurm
    image = spec.container_image or phase.container.image
    if spec.container_runtime == "pyxis":
        return [f"--container-image={image}", f"--container-mounts={','.join(f'{m}:{m}' for m in mounts)}",
                f"--container-workdir={workdir}"], []
    if spec.container_runtime == "apptainer":
        return [], ["apptainer", "exec", "--nv", "--bind", ",".join(mounts), "--pwd", workdir, image]
    return [], []


def launch_command(phase: Any, run_dir: Path) -> list[str]:
    """The command the job runs (what run.json records): the trainer per node under srun's torchrun, or
    torchpack over the allocation's hosts (`$hosts`, set by the script)."""
    from bevctl import launchers
    from bevctl.launchers import torchpack

    in_container = phase.launch.slurm.container_runtime != "none"
    if phase.launch.launcher != "torchpack":
        return node_command(phase, run_dir, in_container)
    if phase.launch.slurm.container_runtime == "pyxis":
        raise UsageError("torchpack under pyxis is not supported: pyxis containers start only through srun",
                         fix="use launch.slurm.container_runtime=apptainer, or launch.launcher=torchrun")
    program = launchers.program(phase, str(run_dir), "python" if in_container else sys.executable)
    return torchpack.command(phase, program, processes_per_node(phase), hosts="$hosts", in_container=in_container)


def script(phase: Any, run_name: str, run_dir: Path, project: Path, env: dict[str, str] | None = None) -> str:
    """The batch script for this run (what `start --dry-run` prints and `job.sbatch` holds)."""
    from bevctl import launchers

    run_dir = run_dir.resolve()
    workdir = str(launchers.workdir(phase) or Path.cwd())
    lines = ["#!/bin/bash", f"# bevctl run {run_name} (phase {phase.name}); written by `bevctl start`, submitted with sbatch"]
    lines += [f"#SBATCH {option}" for option in sbatch_options(phase, run_name, run_dir)]
    lines += ["set -eu", f"cd {shlex.quote(workdir)}", "export PYTHONUNBUFFERED=1"]
    if launchers.workdir(phase) is None:  # the bundled trainer imports model/ from the project
        lines.append(f'export PYTHONPATH={shlex.quote(str(project))}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    for key, value in sorted((env or {}).items()):
        lines.append(f"export {key}={shlex.quote(value)}")
    srun_opts, prefix = _container_prefix(phase, _mounts(phase, run_dir, project), workdir)
    command = launch_command(phase, run_dir)
    if phase.launch.launcher == "torchpack":
        nproc = processes_per_node(phase)
        lines.append(f'hosts=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/$/:{nproc}/" | paste -sd, -)')
        # mpirun runs in the batch shell, not in a step. A stop signals this shell alone (`scancel --batch`); it
        # passes the stop to the ranks, not to mpirun, which would kill them before they save
        # (bevctl.launchers.mpi_stop), and waits for the save.
        from bevctl.launchers.mpi_stop import mpi_program

        ranks = mpi_program(command) or command
        stop = _join([sys.executable, "-m", "bevctl.launchers.mpi_stop", "$child", "--", *ranks])
        lines += [f"{_join([*prefix, *command])} &", "child=$!", f"stop_ranks() {{ {stop} || kill -TERM $child; }}",
                  "trap stop_ranks TERM", "set +e", "wait $child; code=$?",
                  "while kill -0 $child 2>/dev/null; do wait $child; code=$?; done  # a trapped TERM ends the first wait"]
    else:
        lines.append('head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
        lines += ["set +e", _join(["srun", "--kill-on-bad-exit=1", *srun_opts, *prefix, *command]), "code=$?"]
    # What a trainer that died hard (or a checkout's script, which knows no run.json) could not record.
    lines += [_join([sys.executable, "-m", "bevctl.launchers.slurm_finish", str(run_dir), "$code"]), "exit $code"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- the cluster


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise EnvironmentUnusable(f"{name}: command not found (launch.where is slurm)",
                                  fix="run bevctl on a Slurm login node, or choose --set launch.where=local")
    return found


def submit(script_path: Path) -> str:
    """`sbatch --parsable`; returns the job id."""
    proc = subprocess.run([_tool("sbatch"), "--parsable", str(script_path)], capture_output=True, text=True,
                          timeout=_TIMEOUT)
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or [proc.stdout.strip() or "no output"])[-1]
        raise CheckFailed(f"sbatch refused the job: {message}",
                          fix=f"fix launch.slurm (partition, account, time) and look at {script_path}")
    # --parsable prints "jobid" or "jobid;cluster"
    return proc.stdout.strip().split(";")[0]


def job_state(job_id: str | int) -> str | None:
    """Slurm's state of the job (RUNNING, PENDING, COMPLETED, CANCELLED, ...), or None when Slurm cannot say
    (no Slurm tools here, or the job is too old for squeue and the cluster keeps no accounting)."""
    job = str(job_id)
    if shutil.which("squeue"):
        proc = _quiet(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"])
        if proc is not None and proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.split()[0].upper().rstrip("+")
    if shutil.which("sacct"):
        proc = _quiet(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"])
        if proc is not None and proc.returncode == 0 and proc.stdout.strip():
            # "CANCELLED by 0" -> CANCELLED
            return proc.stdout.strip().splitlines()[0].split()[0].upper().rstrip("+")
    return None


def is_active(state: str | None) -> bool | None:
    """True while the job may still run, False once it ended, None when unknown."""
    if state is None:
        return None
    return state.rstrip("+") in ACTIVE


def _quiet(argv: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None


def stop(job_id: str | int, batch_only: bool = False) -> bool:
    """Stop the job: SIGTERM while it runs (`cancel`); a job still waiting in the queue is simply cancelled.
    Returns True when it never started."""
    if job_state(job_id) == "PENDING":
        proc = subprocess.run([_tool("scancel"), str(job_id)], capture_output=True, text=True, timeout=_TIMEOUT)
        if proc.returncode != 0:
            message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"scancel {job_id} failed: {message}", fix=f"check the job with squeue -j {job_id}")
        return True
    cancel(job_id, batch_only)
    return False


def cancel(job_id: str | int, batch_only: bool = False) -> None:
    """SIGTERM to the job's steps, or with `batch_only` to the batch shell alone (a torchpack job: its trap passes
    the stop to the ranks); the trainer saves and exits."""
    argv = [_tool("scancel"), "--signal=TERM"]
    if batch_only:
        argv.append("--batch")
    proc = subprocess.run([*argv, str(job_id)], capture_output=True, text=True, timeout=_TIMEOUT)
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"scancel {job_id} failed: {message}", fix="check the job with squeue -j " + str(job_id))


def write_script(run_dir: Path, text: str) -> Path:
    from bevctl.atomic import atomic_write_text

    path = run_dir / SCRIPT
    atomic_write_text(path, text)
    return path

