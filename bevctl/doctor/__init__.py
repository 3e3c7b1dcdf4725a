"""`bevctl doctor`: environment checks for a phase, as a library the launcher's preflight also calls.

    from bevctl import doctor
    report = doctor.run_checks("phase4a")                      # or a Phase object; ids=/categories= to narrow
    report = doctor.run_checks(phase, categories=["docker"], where="container")
    report.ok, report.failed, report.exit_code, report.to_json()
    doctor.render(report, verbose=False)                       # the human report (rich), to stdout

Every check is a plain function `fn(ctx) -> (status, message, fix)` listed in CHECKS below; the runner
(`core.run_many`) isolates each in a thread with a time limit. stdlib only at import time.
"""

from __future__ import annotations

from bevctl.doctor import checks_data, checks_disk, checks_docker, checks_launcher, checks_python, checks_weights
from bevctl.doctor.core import CATEGORIES, SCHEMA, Check, Context, Report, Result, run_checks, select
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


def render(report: Report, verbose: bool = False, console=None) -> None:
    """Print the human report (imports rich)."""
    from bevctl.doctor.render import render as _render

    _render(report, verbose=verbose, console=console)


__all__ = ["CHECKS", "CATEGORIES", "SCHEMA", "Check", "Context", "Report", "Result", "render", "run_checks", "select"]
