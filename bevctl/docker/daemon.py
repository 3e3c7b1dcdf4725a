"""The Docker daemon: a client that answers (else one line with the fix), the project checkout, GPU hints, and
the names bevctl gives its images and containers. This package is the only code in bevctl that talks to Docker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import docker
from docker import errors as derrors

from bevctl.errors import EnvironmentUnusable, UsageError

DEFAULT_IMAGE = "bevctl:latest"
DEFAULT_NAME = "bevfusion"
DOCKERFILE = "docker/Dockerfile"
# What the image is built from: a change to any of these makes the image stale.
BUILD_INPUTS = ("docker", "pyproject.toml", ".dockerignore")

LABEL_DOCKERFILE = "org.bevctl.dockerfile-sha256"
LABEL_VERSION = "org.bevctl.version"
LABEL_COMMIT = "org.bevctl.git-commit"
LABEL_MANAGED = "org.bevctl.managed"
LABEL_PROJECT = "org.bevctl.project"
LABEL_ROLE = "org.bevctl.role"  # "shell" or "train"
LABEL_PHASE = "org.bevctl.phase"
LABEL_RUN = "org.bevctl.run"

DockerClient = docker.DockerClient

NVIDIA_FIX = (
    "install the NVIDIA Container Toolkit and run `sudo nvidia-ctk runtime configure --runtime=docker && "
    "sudo systemctl restart docker` (or ask for no GPUs)"
)


def project_root(start: Optional[Path] = None) -> Path:
    """The bevctl checkout: $BEVCTL_PROJECT_ROOT, else the nearest parent of `start` (cwd) with docker/Dockerfile."""
    env = os.environ.get("BEVCTL_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / DOCKERFILE).is_file() and (candidate / "pyproject.toml").is_file():
            return candidate
    package_parent = Path(__file__).resolve().parents[2]  # bevctl/docker/daemon.py -> the checkout
    if (package_parent / DOCKERFILE).is_file():
        return package_parent
    raise UsageError(
        f"no {DOCKERFILE} found in {here} or its parents",
        fix="run bevctl inside the bevctl checkout, or set BEVCTL_PROJECT_ROOT",
    )


def _host_desc() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def client(timeout: int = 120) -> DockerClient:
    """A client for a daemon that answers; EnvironmentUnusable (exit 3) with the fix otherwise."""
    try:
        cli = docker.from_env(timeout=timeout)
        cli.ping()
        return cli
    except derrors.DockerException as exc:
        raise _connect_error(exc) from None
    except Exception as exc:  # requests' ConnectionError and friends when the version was given explicitly
        raise _connect_error(exc) from None


def _connect_error(exc: BaseException) -> EnvironmentUnusable:
    text = f"{exc!r} {exc}"
    host = _host_desc()
    if "PermissionError" in text or "Permission denied" in text:
        return EnvironmentUnusable(
            f"permission denied on the Docker socket {host}",
            fix="add yourself to the docker group: `sudo usermod -aG docker $USER`, then log in again",
        )
    if any(s in text for s in ("FileNotFoundError", "No such file", "Connection refused", "ConnectionRefused")):
        return EnvironmentUnusable(
            f"the Docker daemon is not running (nothing answers at {host})",
            fix="start it (`sudo systemctl start docker`) or point DOCKER_HOST at a running daemon",
        )
    short = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return EnvironmentUnusable(
        f"cannot talk to the Docker daemon at {host}: {short}",
        fix="check that Docker runs (`docker info`) and DOCKER_HOST / the docker context",
    )


def _cli(cli: Optional[DockerClient]) -> DockerClient:
    return cli if cli is not None else client()


def connect_env(environment: dict, timeout: int) -> DockerClient:
    """A pinged client for an explicit environment (doctor's view of DOCKER_HOST); raises the SDK's own exception
    when the daemon does not answer, for doctor to explain in its words."""
    cli = docker.from_env(environment=environment, timeout=timeout)
    cli.ping()
    return cli


def gpu_runtime_available(cli: Optional[DockerClient] = None) -> bool:
    """A hint (for doctor): an nvidia runtime is registered or CDI is configured. Not proof either way: --gpus also
    works through nvidia-container-runtime-hook alone."""
    info = _cli(cli).info()
    return "nvidia" in (info.get("Runtimes") or {}) or bool(info.get("CDISpecDirs"))


def host_has_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


def docker_cli() -> str:
    found = shutil.which("docker")
    if not found:
        raise EnvironmentUnusable(
            "the docker command-line client is not installed (bevctl shell hands the terminal to it)",
            fix="install the Docker CLI (e.g. `apt-get install docker-ce-cli` or `docker.io`)",
        )
    return found
