"""Launcher checks: torchrun for the bundled trainer; torchpack, OpenMPI and mpi4py for phases launched the
original way (`torchpack dist-run`, which runs `mpirun --allow-run-as-root`, an OpenMPI-only flag)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from importlib import util
from pathlib import Path

from bevctl.doctor.core import Context, short_path
from bevctl.doctor.checks_python import installed


def _launcher(ctx: Context) -> str | None:
    return None if ctx.phase is None else ctx.phase.launch.launcher


def _skip_unless_torchpack(ctx: Context):
    if ctx.trains_here == "no":
        return "skipped", "the launcher runs in the container; check there with --in-container"
    launcher = _launcher(ctx)
    if launcher != "torchpack":
        return "skipped", f"the phase launches with {launcher}" if launcher else "no phase given (--phase P)"
    return None


def check_torchrun(ctx: Context):
    if ctx.trains_here == "no":
        return "skipped", "the launcher runs in the container; check there with --in-container", None
    phase = ctx.phase
    if phase is not None and phase.launch.launcher != "torchrun":
        return "skipped", f"the phase launches with {phase.launch.launcher}", None
    spec = util.find_spec("torch")  # finds the package without importing it
    run_py = Path(spec.origin).parent / "distributed" / "run.py" if spec and spec.origin else None
    if run_py is None or not run_py.is_file():
        status = "fail" if ctx.trains_here == "yes" else "warn"
        return status, "torch.distributed.run (torchrun) is not available: torch is missing", "see python.torch"
    if phase is not None and phase.launch.nnodes > 1 and not phase.launch.rdzv_endpoint:
        return ("fail", f"{phase.launch.nnodes} nodes but no launch.rdzv_endpoint",
                "set launch.rdzv_endpoint: HOST:PORT of node 0 (--set launch.rdzv_endpoint=10.0.0.1:29500)")
    single = phase is not None and phase.launch.processes_per_node == 1 and phase.launch.nnodes == 1
    how = "one plain process (no torchrun needed)" if single else f"{short_path(sys.executable)} -m torch.distributed.run"
    return "ok", f"trainer starts as {how}", None


def torchpack_candidates(ctx: Context) -> list[Path]:
    """Directories where a torchpack script usually lands when it is installed but not on PATH."""
    env = ctx.env
    home = Path(env.get("HOME", "~")).expanduser()
    # The user's active environment first: the interpreter running bevctl may be another one (pipx, a venv).
    dirs = [Path(env[var]) / "bin" for var in ("CONDA_PREFIX", "VIRTUAL_ENV") if env.get(var)]
    dirs += [Path(sys.executable).parent, home / ".local" / "bin"]
    for base in ("/opt/conda", str(home / "miniconda3"), str(home / "anaconda3"), "/usr/local"):
        dirs.append(Path(base) / "bin")
        dirs += [Path(p) / "bin" for p in sorted(glob.glob(f"{base}/envs/*"))]
    seen, unique = set(), []
    for d in dirs:
        if str(d) not in seen:
            seen.add(str(d))
            unique.append(d)
    return unique


def check_torchpack(ctx: Context):
    skip = _skip_unless_torchpack(ctx)
    if skip:
        return skip[0], skip[1], None
    path = ctx.env.get("PATH", "")
    found = shutil.which("torchpack", path=path)
    if found:
        return "ok", f"torchpack at {short_path(found)}", None
    # The seed's problem 1: "torchpack: command not found", fixed by hand with environment variables.
    on_path = set(path.split(os.pathsep))
    for directory in torchpack_candidates(ctx):
        exe = directory / "torchpack"
        if exe.is_file() and os.access(exe, os.X_OK) and str(directory) not in on_path:
            return ("fail", f"torchpack: command not found (it is installed in {directory}, which is not on PATH)",
                    f'export PATH="{directory}:$PATH" (add it to ~/.bashrc or the image\'s ENV PATH)')
    if installed("torchpack"):
        bindir = Path(sys.executable).parent
        return ("fail", "torchpack: command not found (the package is installed but its script is not on PATH)",
                f'export PATH="{bindir}:$PATH", or pip install --force-reinstall torchpack')
    return "fail", "torchpack: command not found (not installed)", "pip install torchpack (and OpenMPI + mpi4py)"


def check_mpirun(ctx: Context):
    skip = _skip_unless_torchpack(ctx)
    if skip:
        return skip[0], skip[1], None
    exe = shutil.which("mpirun", path=ctx.env.get("PATH", ""))
    if not exe:
        return "fail", "mpirun: not found (torchpack dist-run needs OpenMPI)", "apt-get install openmpi-bin libopenmpi-dev"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=15)
    text = (proc.stdout + proc.stderr).strip()
    first = text.splitlines()[0] if text else "no output"
    if "open mpi" not in text.lower():
        return ("fail", f"{short_path(exe)} is not OpenMPI ({first}): torchpack's --allow-run-as-root fails",
                "apt-get install openmpi-bin and put it first on PATH (MPICH is not supported)")
    return "ok", f"{first} at {short_path(exe)}", None


def check_mpi4py(ctx: Context):
    skip = _skip_unless_torchpack(ctx)
    if skip:
        return skip[0], skip[1], None
    if util.find_spec("mpi4py") is None:
        return "fail", "No module named 'mpi4py' (torchpack needs it even for one GPU)", "pip install mpi4py==3.0.3"
    proc = subprocess.run([sys.executable, "-c", "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return "fail", f"mpi4py does not load: {tail}", "pip install --force-reinstall --no-binary mpi4py mpi4py (builds against the OpenMPI on PATH)"
    return "ok", f"mpi4py: {proc.stdout.strip()}", None
