"""The list of checks and the entry point that runs them for a phase (`run_checks`). Above the checks and
`core` in the layering: they never import this module."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from bevctl.doctor import checks_data, checks_disk, checks_docker, checks_launcher, checks_python, checks_weights
from bevctl.doctor.checks_docker import image_present
from bevctl.doctor.core import Check, Context, Report, run_many, select
from bevctl.launchers.container_env import check_infiniband

_PROBE = checks_python.PROBE_TIMEOUT + 10

CHECKS: list[Check] = [
    Check("python.version", checks_python.check_python, "Python version"),
    Check("python.bevctl", checks_python.check_bevctl, "bevctl install and PATH"),
    Check("python.packages", checks_python.check_packages, "training dependencies installed", unusable_on_fail=True),
    Check("python.torch", checks_python.check_torch, "torch imports, version, CUDA build", _PROBE, unusable_on_fail=True),
    Check("python.spconv", checks_python.check_spconv, "spconv imports, CUDA flavour matches torch", _PROBE),
    Check("gpu.devices", checks_python.check_gpus, "NVIDIA GPUs (NVML / nvidia-smi) vs launch.gpus"),
    Check("gpu.cuda", checks_python.check_cuda, "torch's CUDA build vs the driver", _PROBE),
    Check("gpu.arch", checks_python.check_arch, "GPU compute capability vs torch's compiled archs", _PROBE),
    Check("launcher.torchrun", checks_launcher.check_torchrun, "torchrun / torch.distributed.run, rendezvous"),
    Check("launcher.torchpack", checks_launcher.check_torchpack, "torchpack on PATH (torchpack phases)"),
    Check("launcher.mpirun", checks_launcher.check_mpirun, "mpirun is OpenMPI (torchpack phases)"),
    Check("launcher.mpi4py", checks_launcher.check_mpi4py, "mpi4py imports (torchpack phases)", 40),
    Check("launcher.infiniband", check_infiniband, "InfiniBand devices passed to containers (multi-node NCCL)"),
    Check("docker.daemon", checks_docker.check_daemon, "docker daemon reachable", unusable_on_fail=True),
    Check("docker.runtime", checks_docker.check_runtime, "NVIDIA container runtime (GPU phases)"),
    Check("docker.image", checks_docker.check_image, "project image built and current"),
    Check("docker.shm", checks_docker.check_shm, "/dev/shm vs GPUs × data workers"),
    Check("data.root", checks_data.check_root, "dataset root exists (or will be generated)"),
    Check("data.tables", checks_data.check_tables, "nuScenes version tables"),
    Check("data.sensors", checks_data.check_sensors, "samples/ and sweeps/ present and readable"),
    Check("data.maps", checks_data.check_maps, "maps/expansion for the map head"),
    Check("data.infos", checks_data.check_infos, "data.info_pkl exists"),
    Check("weights.load_from", checks_weights.check_load_from, "load_from is a readable checkpoint"),
    Check("weights.resume", checks_weights.check_resume, "resume checkpoint readable"),
    Check("weights.pretrained", checks_weights.check_pretrained, "pretrained files present, or not needed"),
    Check("disk.runs", checks_disk.check_runs_writable, "runs folder writable"),
    Check("disk.space", checks_disk.check_space, "free space for the kept checkpoints"),
]


def resolve_auto(ctx: Context, limit: float = 5.0) -> None:
    """Decide `launch.where: auto` like the launcher: the container when its image exists, else local.
    Bounded by `limit` so a hanging daemon leaves it undecided instead of stalling the report."""
    if ctx.where != "auto" or ctx.phase is None:
        return

    def decide() -> None:
        ctx.auto_choice = "container" if image_present(ctx) else "local"

    thread = threading.Thread(target=decide, name="doctor:where", daemon=True)
    thread.start()
    thread.join(limit)


def run_checks(phase: Any = None, ids: Optional[Iterable[str]] = None, categories: Optional[Iterable[str]] = None, *,
               where: Optional[str] = None, checks: Optional[list[Check]] = None, timeout: Optional[float] = None,
               cwd: Optional[Path] = None, in_container: Optional[bool] = None, overrides: Optional[list[str]] = None) -> Report:
    """Run the doctor's checks and return a `Report`.

    phase: a `bevctl.phases.Phase`, a phase name or YAML path (loaded with `overrides`), or None (no phase: checks
    that need one are skipped, requirements that depend on it are warnings). ids / categories: check ids,
    categories ("docker") or globs ("data.*"); all checks when both are empty. where: override the phase's
    `launch.where` ("local" | "container"), e.g. after the launcher resolved "auto". timeout: per-check limit in
    seconds, replacing each check's own.
    """
    phase_name = None
    if isinstance(phase, str):
        from bevctl.phases import load_phase

        phase = load_phase(phase, overrides)
    if phase is not None:
        phase_name = phase.name
    ctx = Context(phase, where=where, cwd=cwd, in_container=in_container)
    resolve_auto(ctx)
    chosen = select(checks if checks is not None else CHECKS, ids, categories)
    start = time.monotonic()
    results = run_many(chosen, ctx, timeout)
    where_label = f"container ({os.environ.get('HOSTNAME', '?')})" if ctx.in_container else "host"
    return Report(results, phase=phase_name, where=where_label, seconds=time.monotonic() - start,
                  launch_where=ctx.describe_where())
