"""Docker checks on the host: the daemon (down vs permission denied), the NVIDIA runtime, the image, /dev/shm.

They fail only when the phase runs in the container (`launch.where: container`); for `auto` or no phase they
warn, for `local` they are skipped. Inside the project container there is no daemon to check: skipped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path
from typing import Any

from bevctl.doctor.core import Context, short_path

SHM_PER_WORKER = 512 * 2**20  # DataLoader workers pass batches through /dev/shm; ds_report warns below a few GiB
CLIENT_TIMEOUT = 10


def _severity(ctx: Context) -> str:
    return "fail" if ctx.docker_needed == "yes" else "warn"


def _skip(ctx: Context):
    if ctx.in_container:
        return "skipped", "running inside the project container"
    if ctx.docker_needed == "no":
        return "skipped", "the phase runs locally (launch.where: local)"
    return None


def docker_host(env: dict) -> str:
    return env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(ctx: Context) -> Any:
    """A pinged docker client, once per report; raises ConnectionError(message, fix) when unreachable."""

    def make() -> Any:
        host = docker_host(ctx.env)
        if host.startswith("unix://"):
            sock = host[len("unix://"):]
            rootless = Path(ctx.env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}") / "docker.sock"
            if not os.path.exists(sock) and not ctx.env.get("DOCKER_HOST") and rootless.exists():
                # Rootless docker listens elsewhere; the CLI finds it through its context, the SDK only via DOCKER_HOST.
                raise ConnectionError(f"no docker daemon at {sock}, but a rootless one listens at {rootless}",
                                      f"export DOCKER_HOST=unix://{rootless}")
            if not os.path.exists(sock):
                raise ConnectionError(
                    f"the docker daemon is not running (no socket at {sock})",
                    "start it: sudo systemctl start docker (or sudo dockerd &); "
                    + ("unset DOCKER_HOST or point it at the daemon" if ctx.env.get("DOCKER_HOST") else "or set DOCKER_HOST"),
                )
            if not os.access(sock, os.R_OK | os.W_OK):
                raise ConnectionError(f"permission denied on {sock}",
                                      "sudo usermod -aG docker $USER, then log out and in (or run: newgrp docker)")
        try:
            from bevctl import docker
        except ImportError:
            raise ConnectionError("the docker Python SDK is not installed", "pip install 'docker>=7.1'") from None
        try:
            return docker.connect_env(ctx.env, CLIENT_TIMEOUT)
        except Exception as exc:
            raise ConnectionError(*_explain(exc, host)) from None

    return ctx.once("docker", make)


def _explain(exc: Exception, host: str) -> tuple[str, str]:
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, PermissionError) for e in chain) or "Permission denied" in text:
        return (f"permission denied talking to the docker daemon at {host}",
                "sudo usermod -aG docker $USER, then log out and in (or run: newgrp docker)")
    if any(isinstance(e, (ConnectionRefusedError, FileNotFoundError)) for e in chain) or "refused" in text:
        return (f"the docker daemon is not running at {host} (connection refused)",
                "start it: sudo systemctl start docker (or sudo dockerd &)")
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return (f"the docker daemon at {host} does not answer (timed out)",
                "restart it: sudo systemctl restart docker")
    first = " ".join(str(exc).split())[:200]
    return f"cannot reach the docker daemon at {host}: {first}", "check `docker info` and DOCKER_HOST / docker context"


def image_present(ctx: Context) -> bool:
    """Whether the phase's image exists (False when docker is unreachable): how `launch.where: auto` decides."""
    try:
        client = connect(ctx)
    except ConnectionError:
        return False
    from bevctl import docker

    return docker.find_image(ctx.phase.container.image, cli=client) is not None


def check_daemon(ctx: Context):
    skip = _skip(ctx)
    if skip:
        return skip[0], skip[1], None
    try:
        client = connect(ctx)
    except ConnectionError as exc:
        message, fix = exc.args
        why = "" if ctx.docker_needed == "yes" else " (needed only to train in the container)"
        return _severity(ctx), message + why, fix
    version = client.version()
    return "ok", f"docker daemon {version.get('Version', '?')} at {docker_host(ctx.env)}", None


def _client_or_skip(ctx: Context):
    try:
        return connect(ctx), None
    except ConnectionError:
        return None, ("skipped", "the docker daemon is unreachable (see docker.daemon)", None)


def check_runtime(ctx: Context):
    skip = _skip(ctx)
    if skip:
        return skip[0], skip[1], None
    if not ctx.gpu_phase:
        return "skipped", "no GPUs wanted" if ctx.phase is not None else "no phase given (--phase P)", None
    client, skipped = _client_or_skip(ctx)
    if skipped:
        return skipped
    info = client.info()
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    cdi = [d for d in info.get("CDISpecDirs") or [] if Path(d).is_dir() and any(Path(d).glob("nvidia*"))]
    if "nvidia" in runtimes or cdi or shutil.which("nvidia-container-cli", path=ctx.env.get("PATH")):
        how = "runtime 'nvidia'" if "nvidia" in runtimes else ("CDI" if cdi else "nvidia-container-cli")
        return "ok", f"NVIDIA container support via {how} (docker run --gpus works)", None
    return (_severity(ctx), f"no NVIDIA runtime in docker (runtimes: {', '.join(runtimes) or 'none'}): --gpus will fail",
            "install nvidia-container-toolkit, then: sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker")


def _project_files(ctx: Context) -> list[Path]:
    candidates = [ctx.cwd / "docker" / "Dockerfile", ctx.cwd / "pyproject.toml"]
    return [p for p in candidates if p.is_file()]


def _labelled_status(ctx: Context, client: Any, image: str) -> dict | None:
    """bevctl.docker's verdict (labels hold a hash of docker/ and pyproject.toml)."""
    from bevctl import docker

    try:
        return docker.image_info(image, root=docker.project_root(ctx.cwd), cli=client)
    except Exception:  # outside a checkout (no docker/Dockerfile): fall back to timestamps
        return None


def check_image(ctx: Context):
    skip = _skip(ctx)
    if skip:
        return skip[0], skip[1], None
    image = ctx.phase.container.image if ctx.phase is not None else "bevctl:latest"
    client, skipped = _client_or_skip(ctx)
    if skipped:
        return skipped
    from bevctl import docker

    img = docker.find_image(image, cli=client)
    if img is None:
        return _severity(ctx), f"image {image} is not built", "bevctl build (or set container.image)"
    created = dt.datetime.fromisoformat(img.attrs["Created"][:19]).replace(tzinfo=dt.timezone.utc)
    described = f"image {image} ({img.attrs.get('Size', 0) / 2**30:.1f} GiB, built {created:%Y-%m-%d %H:%M} UTC)"
    info = _labelled_status(ctx, client, image)
    if info is not None:
        if info.get("status") == "stale":
            return "warn", f"{described} is stale: docker/ or pyproject.toml changed since it was built", "bevctl build"
        return "ok", described, None
    newer = [p for p in _project_files(ctx) if dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc) > created]
    if newer:
        return "warn", f"{described} is older than {', '.join(short_path(p) for p in newer)}", "bevctl build"
    return "ok", described, None


def parse_size(text: str) -> int:
    """Docker-style sizes: 16g, 512m, 1024k, 2gb, bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    power = " kmgt".index(match.group(2) or " ") if match.group(2) != "b" else 0
    return int(float(match.group(1)) * 1024**power)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_shm(ctx: Context):
    """/dev/shm against GPUs × DataLoader workers: too small makes workers die with 'bus error'."""
    if ctx.phase is None:
        return "skipped", "no phase given (--phase P)", None
    data, launch, container = ctx.phase.data, ctx.phase.launch, ctx.phase.container
    procs = launch.processes_per_node
    need = procs * max(data.workers, 1) * SHM_PER_WORKER
    basis = f"{procs} process(es) × {data.workers} workers"
    bad = "fail" if ctx.gpu_phase else "warn"
    if ctx.runs_in == "container":  # on the host: judge the container's configured size
        if container.ipc_host:
            return "ok", "the container shares the host IPC namespace (ipc_host)", None
        have = parse_size(container.shm_size)
        if have < need:
            return (bad, f"container.shm_size {container.shm_size} < {_gib(need)} needed for {basis}",
                    f"--set container.shm_size={-(-need // 2**30)}g (or container.ipc_host: true)")
        return "ok", f"container.shm_size {container.shm_size} ≥ {_gib(need)} for {basis}", None
    if not os.path.isdir("/dev/shm"):
        return bad, "/dev/shm does not exist", "mount a tmpfs at /dev/shm (docker: --shm-size 16g)"
    stat = os.statvfs("/dev/shm")
    have = stat.f_blocks * stat.f_frsize
    if have < need:
        where = "this container's" if ctx.in_container else "this machine's"
        return (bad, f"{where} /dev/shm is {_gib(have)} < {_gib(need)} needed for {basis}",
                "restart the container with --shm-size " f"{-(-need // 2**30)}g, or lower data.workers")
    return "ok", f"/dev/shm {_gib(have)} ≥ {_gib(need)} for {basis}", None
