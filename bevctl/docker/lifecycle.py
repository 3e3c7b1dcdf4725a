"""Container lifecycle through the SDK: create and start a spec, wait, logs, stop (SIGTERM, SIGKILL after the
grace), remove, state, find bevctl's containers by label, exec; and the `docker exec -it` argv for the one
interactive path (the SDK cannot give a real terminal). `container` arguments take an id, a name or a Container."""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Optional, Union

from docker import errors as derrors

from bevctl.docker.daemon import LABEL_MANAGED, NVIDIA_FIX, DockerClient, _cli
from bevctl.docker.image import _clip, _tag_flag
from bevctl.errors import BevctlError, EnvironmentUnusable, UsageError

def _api_error(exc: derrors.APIError, spec: dict) -> BevctlError:
    text = str(exc.explanation or exc)
    if "could not select device driver" in text or "nvidia" in text.lower() and "runtime" in text.lower():
        return EnvironmentUnusable("GPUs were asked for but Docker has no NVIDIA runtime", fix=NVIDIA_FIX)
    if "rlimit type 8" in text or "RLIMIT_MEMLOCK" in text:
        return EnvironmentUnusable(
            "the Docker daemon may not set memlock=unlimited for the container (rootless Docker or a limited daemon)",
            fix="set LimitMEMLOCK=infinity in docker.service, or export BEVCTL_MEMLOCK=off (or a size in bytes)",
        )
    if exc.status_code == 409 or "is already in use" in text:
        name = spec.get("name")
        return UsageError(
            f"a container named {name} already exists",
            fix=f"`bevctl shell` reuses it; or remove it with `docker rm -f {name}`",
        )
    if "bind source path does not exist" in text or "invalid mount config" in text:
        return UsageError(f"a mount source is missing: {_clip(text, 200)}", fix="create the folder or fix the path")
    return EnvironmentUnusable(f"docker refused to run the container: {_clip(text, 300)}", fix="see `docker info` and the daemon log")


def run_detached(spec: dict, cli: Optional[DockerClient] = None) -> str:
    """Create and start the container described by `spec`; returns its id. The image must exist."""
    cli = _cli(cli)
    for folder in getattr(spec, "mkdirs", []):
        os.makedirs(folder, exist_ok=True)
    # No pre-check of `docker info` runtimes: dockerd serves --gpus through nvidia-container-runtime-hook without a
    # registered "nvidia" runtime, so only the daemon's own refusal is trustworthy (mapped in _api_error).
    kwargs = {k: v for k, v in spec.items() if k not in ("image", "command", "detach", "stop_timeout")}
    kwargs["version"] = cli.api._version
    from docker.models.containers import _create_container_args

    # The high-level API cannot set StopTimeout, which makes a plain `docker stop` wait the phase's grace too.
    create = _create_container_args(dict(kwargs, image=spec["image"], command=spec.get("command")))
    if spec.get("stop_timeout") is not None:
        create["stop_timeout"] = int(spec["stop_timeout"])
    try:
        created = cli.api.create_container(**create)
    except derrors.ImageNotFound:
        raise EnvironmentUnusable(f"image {spec['image']} not found", fix=f"run `bevctl build{_tag_flag(spec['image'])}`") from None
    except derrors.APIError as exc:
        raise _api_error(exc, spec) from None
    cid = created["Id"]
    try:
        cli.api.start(cid)
    except derrors.APIError as exc:
        try:
            cli.api.remove_container(cid, force=True)
        except derrors.APIError:
            pass
        raise _api_error(exc, spec) from None
    return cid


def get(container: Any, cli: Optional[DockerClient] = None):
    """A Container from an id, a name or a Container."""
    if hasattr(container, "reload"):
        return container
    try:
        return _cli(cli).containers.get(container)
    except derrors.NotFound:
        raise UsageError(f"no container {container}", fix="list bevctl's containers with `docker ps -a --filter label=org.bevctl.managed`") from None


def find(container: Any, cli: Optional[DockerClient] = None):
    """A Container by id or name, or None when there is none."""
    try:
        return _cli(cli).containers.get(container)
    except derrors.NotFound:
        return None


def wait(container: Any, timeout: Optional[float] = None, cli: Optional[DockerClient] = None) -> int:
    """Block until the container exits; its exit code."""
    ctr = get(container, cli)
    try:
        return int(ctr.wait(timeout=timeout)["StatusCode"])
    except Exception as exc:  # requests' ReadTimeout when `timeout` passes
        if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
            raise TimeoutError(f"container {ctr.name} still running after {timeout} s") from None
        raise


def logs(container: Any, follow: bool = False, tail: Union[str, int] = "all", cli: Optional[DockerClient] = None):
    """The container's output (stdout+stderr): a string, or with follow=True an iterator of lines."""
    ctr = get(container, cli)
    if not follow:
        return ctr.logs(stdout=True, stderr=True, tail=tail).decode("utf-8", "replace")
    return _lines(ctr.logs(stdout=True, stderr=True, tail=tail, stream=True, follow=True))


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    pending = ""
    for chunk in chunks:
        pending += chunk.decode("utf-8", "replace")
        *lines, pending = pending.split("\n")
        yield from lines
    if pending:
        yield pending


def stop(container: Any, grace_seconds: Optional[int] = None, cli: Optional[DockerClient] = None) -> int:
    """SIGTERM the main process, SIGKILL after `grace_seconds` (default: the container's stop timeout); exit code."""
    ctr = get(container, cli)
    ctr.reload()
    if ctr.status in ("running", "restarting", "paused"):
        if grace_seconds is None:
            grace_seconds = ctr.attrs.get("Config", {}).get("StopTimeout") or 10
        ctr.stop(timeout=int(grace_seconds))
    ctr.reload()
    return int(ctr.attrs.get("State", {}).get("ExitCode", -1))


def remove(container: Any, force: bool = False, cli: Optional[DockerClient] = None) -> None:
    try:
        get(container, cli).remove(force=force)
    except derrors.NotFound:
        pass


def state(container: Any, cli: Optional[DockerClient] = None) -> dict[str, Any]:
    """{"id", "name", "status", "exit_code", "labels", "image", "started_at", "finished_at"}."""
    ctr = get(container, cli)
    ctr.reload()
    return _describe(ctr)


def _describe(ctr) -> dict[str, Any]:
    st = ctr.attrs.get("State", {})
    return {
        "id": ctr.id,
        "name": ctr.name,
        "status": ctr.status,
        "exit_code": st.get("ExitCode"),
        "labels": ctr.labels,
        "image": (ctr.attrs.get("Config") or {}).get("Image"),
        "started_at": st.get("StartedAt"),
        "finished_at": st.get("FinishedAt"),
    }


def find_containers(labels: Optional[dict[str, str]] = None, include_stopped: bool = True, cli: Optional[DockerClient] = None) -> list[dict[str, Any]]:
    """bevctl's containers (label org.bevctl.managed=1) matching every given label; running and stopped."""
    wanted = {LABEL_MANAGED: "1", **(labels or {})}
    filters = {"label": [f"{k}={v}" if v is not None else k for k, v in wanted.items()]}
    return [_describe(c) for c in _cli(cli).containers.list(all=include_stopped, filters=filters)]


def exec_in(container: Any, command: list[str], user: Optional[str] = None, cli: Optional[DockerClient] = None) -> tuple[int, str]:
    """Run a command in a running container (no terminal); (exit code, output)."""
    result = get(container, cli).exec_run(command, user=user or "", demux=False)
    return int(result.exit_code), (result.output or b"").decode("utf-8", "replace")


def exec_argv(container: str, command: Optional[list[str]] = None, interactive: Optional[bool] = None) -> list[str]:
    """`docker exec -it CONTAINER bash` (no -t when stdin is not a terminal), for os.execvp."""
    if interactive is None:
        interactive = os.isatty(0)
    flags = "-it" if interactive else "-i"
    return ["docker", "exec", flags, container, *(command or ["bash"])]


def ensure_running(spec: dict, cli: Optional[DockerClient] = None) -> tuple[str, str]:
    """The container named spec["name"] running: reused when running, restarted when stopped, else created.
    Returns (container id, "reused" | "restarted" | "created")."""
    cli = _cli(cli)
    try:
        ctr = cli.containers.get(spec["name"])
    except derrors.NotFound:
        return run_detached(spec, cli), "created"
    if ctr.status == "running":
        return ctr.id, "reused"
    try:
        ctr.start()
    except derrors.APIError as exc:
        raise _api_error(exc, spec) from None
    return ctr.id, "restarted"
