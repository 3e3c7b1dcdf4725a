"""The one module through which bevctl talks to Docker (docker SDK >= 7.1; import it lazily, inside commands).

Everything non-interactive goes through the SDK; the interactive shell is the docker CLI itself (`os.execvp`),
because the SDK cannot give a real terminal. One run specification renders both the SDK call and the
equivalent `docker run` line, so `--print-cmd` shows exactly what bevctl does.

API (used by `bevctl build`, `bevctl shell` and `bevctl start --container`):

    client() -> DockerClient                      # reachable daemon, else EnvironmentUnusable (exit 3) with the fix
    project_root() -> Path                        # the checkout holding docker/Dockerfile
    image_status(tag) -> "present"|"missing"|"stale"
    require_image(tag, allow_stale=False)         # raises "run bevctl build" errors
    build_image(tag, build_args=..., on_event=..., log_path=...) -> BuildResult   # raises BuildFailed (exit 1)
    docker_build_cmd(tag, ...) -> list[str]
    run_spec(phase, command, extra_mounts=..., env=..., detach=True, ...) -> RunSpec (a dict of SDK kwargs)
    train_command(phase, run_name) -> list[str]   # python -m model.train / torchrun ... --run-dir /workspace/...
    docker_run_cmd(spec) -> list[str]             # the same spec as a `docker run` argv
    run_detached(spec) -> container id            # creates and starts it
    wait(container, timeout=None) -> exit code
    logs(container, follow=False, tail="all") -> str | Iterator[str]
    stop(container, grace_seconds=None) -> exit code (SIGTERM, then SIGKILL after the grace)
    remove(container, force=False)
    find_containers(labels) -> list[dict]         # bevctl's containers: labels org.bevctl.*
    state(container) -> dict                      # id, name, status, exit_code, labels, image, started/finished
    exec_in(container, command) -> (exit code, output)        # non-interactive, through the SDK
    exec_argv(container, command, interactive) -> list[str]   # `docker exec -it ...` for os.execvp
    ensure_running(spec) -> (id, "created"|"restarted"|"reused")   # the named container, as `bevctl shell` uses it

`container` arguments take an id, a name or an SDK Container.

Containers run as the invoking user's uid:gid with HOME=/tmp/home-<uid>, under an init (signals reach the main
process), with the memlock/stack ulimits NVIDIA recommends, shared memory for DataLoader workers, the project at
/workspace/bevfusion, runs/ read-write and the dataset read-only (generated synthetic data: its parent folder
read-write). Tests get a real engine and a local image from tests/docker_engine.py.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Union

import docker
from docker import errors as derrors
from docker.types import DeviceRequest, Mount, Ulimit

from bevctl import __version__
from bevctl.errors import BevctlError, CheckFailed, EnvironmentUnusable, UsageError

if TYPE_CHECKING:
    from bevctl.phases import Phase

DEFAULT_IMAGE = "bevctl:latest"
DEFAULT_NAME = "bevfusion"
WORKDIR = "/workspace/bevfusion"
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

NVIDIA_FIX = (
    "install the NVIDIA Container Toolkit and run `sudo nvidia-ctk runtime configure --runtime=docker && "
    "sudo systemctl restart docker` (or ask for no GPUs)"
)

MountLike = Union[str, tuple, Mount]


# --------------------------------------------------------------------------------------------------- basics


def project_root(start: Optional[Path] = None) -> Path:
    """The bevctl checkout: $BEVCTL_PROJECT_ROOT, else the nearest parent of `start` (cwd) with docker/Dockerfile."""
    env = os.environ.get("BEVCTL_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / DOCKERFILE).is_file() and (candidate / "pyproject.toml").is_file():
            return candidate
    package_parent = Path(__file__).resolve().parents[1]
    if (package_parent / DOCKERFILE).is_file():
        return package_parent
    raise UsageError(
        f"no {DOCKERFILE} found in {here} or its parents",
        fix="run bevctl inside the bevctl checkout, or set BEVCTL_PROJECT_ROOT",
    )


def _host_desc() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def client(timeout: int = 120) -> docker.DockerClient:
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


def _cli(cli: Optional[docker.DockerClient]) -> docker.DockerClient:
    return cli if cli is not None else client()


def gpu_runtime_available(cli: Optional[docker.DockerClient] = None) -> bool:
    """A hint (for doctor): an nvidia runtime is registered or CDI is configured. Not proof either way: --gpus also
    works through nvidia-container-runtime-hook alone."""
    info = _cli(cli).info()
    return "nvidia" in (info.get("Runtimes") or {}) or bool(info.get("CDISpecDirs"))


def host_has_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


# --------------------------------------------------------------------------------------------------- images


def build_inputs_hash(root: Optional[Path] = None) -> str:
    """sha256 over the files the image is built from (docker/, pyproject.toml, .dockerignore): names and contents."""
    root = root or project_root()
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
        for item in files:
            if "__pycache__" in item.parts:
                continue
            digest.update(item.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(item.read_bytes()).digest())
    return digest.hexdigest()


def git_commit(root: Optional[Path] = None) -> str:
    """The checkout's commit, with `-dirty` when tracked files changed; "unknown" outside git."""
    from bevctl import gitinfo

    return gitinfo.commit(root or project_root()) or "unknown"


def image_labels(root: Optional[Path] = None) -> dict[str, str]:
    root = root or project_root()
    return {LABEL_DOCKERFILE: build_inputs_hash(root), LABEL_VERSION: __version__, LABEL_COMMIT: git_commit(root)}


def default_build_args() -> dict[str, str]:
    """The image's user gets the invoking user's uid/gid (not root's: root keeps the Dockerfile's 1000)."""
    uid, gid = os.getuid(), os.getgid()
    return {"USER_UID": str(uid), "USER_GID": str(gid)} if uid != 0 else {}


def image_info(tag: str, root: Optional[Path] = None, cli: Optional[docker.DockerClient] = None) -> dict[str, Any]:
    """{"tag", "status": present|missing|stale, "id", "labels", "expected_sha256", "created"}."""
    root = root or project_root()
    expected = build_inputs_hash(root)
    try:
        image = _cli(cli).images.get(tag)
    except derrors.ImageNotFound:
        return {"tag": tag, "status": "missing", "id": None, "labels": {}, "expected_sha256": expected, "created": None}
    labels = image.labels or {}
    built_from = labels.get(LABEL_DOCKERFILE)
    # An image without our label (built by hand without --label) cannot be judged: treat it as present.
    status = "stale" if built_from and built_from != expected else "present"
    return {
        "tag": tag,
        "status": status,
        "id": image.id,
        "labels": labels,
        "expected_sha256": expected,
        "created": image.attrs.get("Created"),
    }


def image_status(tag: str = DEFAULT_IMAGE, root: Optional[Path] = None, cli: Optional[docker.DockerClient] = None) -> str:
    """"present", "missing" or "stale" (docker/, pyproject.toml or .dockerignore changed since the build)."""
    return image_info(tag, root, cli)["status"]


def require_image(
    tag: str = DEFAULT_IMAGE, root: Optional[Path] = None, allow_stale: bool = False, cli: Optional[docker.DockerClient] = None
) -> str:
    """Raise the one-line error a user needs when the image is missing (exit 3) or stale (exit 1)."""
    status = image_status(tag, root, cli)
    if status == "missing":
        raise EnvironmentUnusable(f"image {tag} not found", fix=f"run `bevctl build{_tag_flag(tag)}`")
    if status == "stale" and not allow_stale:
        raise CheckFailed(
            f"image {tag} is stale: docker/Dockerfile (or pyproject.toml) changed since it was built",
            fix=f"run `bevctl build{_tag_flag(tag)}`",
        )
    return status


def _tag_flag(tag: str) -> str:
    return "" if tag == DEFAULT_IMAGE else f" --tag {tag}"


def docker_build_cmd(
    tag: str = DEFAULT_IMAGE,
    root: Optional[Path] = None,
    build_args: Optional[dict[str, str]] = None,
    no_cache: bool = False,
    network_mode: Optional[str] = None,
) -> list[str]:
    """The `docker build` argv equivalent to `build_image` with the same arguments."""
    root = root or project_root()
    argv = ["docker", "build", "-f", str(root / DOCKERFILE), "-t", tag]
    for key, value in {**default_build_args(), **(build_args or {})}.items():
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in image_labels(root).items():
        argv += ["--label", f"{key}={value}"]
    if no_cache:
        argv.append("--no-cache")
    if network_mode:
        argv += ["--network", network_mode]
    argv.append(str(root))
    return argv


class BuildFailed(CheckFailed):
    """A build step failed; `tail` holds the last lines of its output, `log_path` the full log."""

    def __init__(self, message: str, fix: str, tail: list[str], log_path: Optional[Path]):
        super().__init__(message, fix=fix)
        self.tail = tail
        self.log_path = log_path


@dataclass
class BuildEvent:
    """One thing that happened during a build, for progress displays."""

    kind: str  # "step" | "output" | "pull" | "done"
    step: int = 0
    total: int = 0
    text: str = ""
    layer: str = ""
    layers_total: int = 0
    layers_done: int = 0


@dataclass
class BuildResult:
    tag: str
    image_id: str
    log_path: Optional[Path]
    steps: int
    seconds: float
    labels: dict[str, str] = field(default_factory=dict)


def build_log_path(root: Optional[Path] = None) -> Path:
    root = root or project_root()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / "runs" / ".build" / f"{stamp}.log"


def build_image(
    tag: str = DEFAULT_IMAGE,
    root: Optional[Path] = None,
    build_args: Optional[dict[str, str]] = None,
    no_cache: bool = False,
    network_mode: Optional[str] = None,
    log_path: Optional[Path] = None,
    on_event: Optional[Callable[[BuildEvent], None]] = None,
    cli: Optional[docker.DockerClient] = None,
) -> BuildResult:
    """Build docker/Dockerfile through the SDK's streaming API; every line goes to `log_path` (default
    runs/.build/<time>.log). Raises BuildFailed with the failing step's last lines."""
    root = root or project_root()
    cli = _cli(cli)
    log_path = log_path or build_log_path(root)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    labels = image_labels(root)
    args = {**default_build_args(), **(build_args or {})}
    emit = on_event or (lambda event: None)
    started = time.monotonic()
    step = total = 0
    step_text = ""
    step_lines: list[str] = []  # output of the current step, for the failure report
    layers: dict[str, bool] = {}
    image_id = ""
    pending = ""
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# {shlex.join(docker_build_cmd(tag, root, build_args, no_cache, network_mode))}\n")
        try:
            stream = cli.api.build(
                path=str(root),
                dockerfile=DOCKERFILE,
                tag=tag,
                buildargs=args,
                labels=labels,
                nocache=no_cache,
                rm=True,
                forcerm=True,
                network_mode=network_mode,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or "unknown error"
                    if pending:
                        step_lines.append(pending)
                        log.write(pending + "\n")
                    log.write(f"ERROR: {message}\n")
                    raise _build_failed(message, step, total, step_text, step_lines, log_path)
                if "aux" in chunk and isinstance(chunk["aux"], dict) and chunk["aux"].get("ID"):
                    image_id = chunk["aux"]["ID"]
                if "stream" in chunk:
                    # The classic builder colours RUN steps' stderr; the log and the failure report want plain text.
                    pending += _ANSI.sub("", chunk["stream"])
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        log.write(line + "\n")
                        parsed = _parse_step(line)
                        if parsed:
                            step, total, step_text = parsed
                            step_lines = []
                            emit(BuildEvent("step", step=step, total=total, text=step_text))
                        elif line.strip() and not line.startswith(_BUILDER_NOISE):
                            step_lines.append(line)
                            emit(BuildEvent("output", step=step, total=total, text=line))
                        if line.startswith("Successfully built ") and not image_id:
                            image_id = line.split()[-1]
                elif "status" in chunk:
                    status, layer = chunk["status"], chunk.get("id", "")
                    if status not in ("Downloading", "Extracting", "Waiting"):
                        log.write(f"{layer + ': ' if layer else ''}{status}\n")
                    if layer and status in ("Pulling fs layer", "Waiting", "Already exists", "Pull complete", "Download complete"):
                        layers.setdefault(layer, False)
                        if status in ("Pull complete", "Already exists"):
                            layers[layer] = True
                        emit(BuildEvent("pull", step=step, total=total, text=status, layer=layer,
                                        layers_total=len(layers), layers_done=sum(layers.values())))
        except derrors.BuildError as exc:  # pragma: no cover - the low-level API reports errors in the stream
            raise _build_failed(str(exc), step, total, step_text, step_lines, log_path) from None
        except derrors.APIError as exc:
            log.write(f"ERROR: {exc.explanation or exc}\n")
            raise _build_failed(str(exc.explanation or exc), step, total, step_text, step_lines, log_path) from None
        if pending:
            log.write(pending + "\n")
    if not image_id:
        image_id = cli.images.get(tag).id
    seconds = time.monotonic() - started
    emit(BuildEvent("done", step=step, total=total, text=image_id))
    return BuildResult(tag=tag, image_id=image_id, log_path=log_path, steps=total, seconds=seconds, labels=labels)


# The classic builder's own bookkeeping lines: not a step's output.
_BUILDER_NOISE = (" ---> ", "Removing intermediate container", "Successfully built ", "Successfully tagged ")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _parse_step(line: str) -> Optional[tuple[int, int, str]]:
    # The classic builder announces each instruction as "Step 3/12 : RUN ...".
    if not line.startswith("Step "):
        return None
    head, _, text = line.partition(" : ")
    try:
        n, m = head[5:].split("/")
        return int(n), int(m), text.strip()
    except ValueError:
        return None


def _build_failed(message: str, step: int, total: int, step_text: str, lines: list[str], log_path: Path) -> BuildFailed:
    where = f" at step {step}/{total} ({_clip(step_text, 80)})" if step else ""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return BuildFailed(
        f"docker build failed{where}: {_clip(first, 300)}",
        fix=f"see the step's last lines above; full log: {log_path}",
        tail=lines[-15:],
        log_path=log_path,
    )


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------------------------------- run specs


class RunSpec(dict):
    """Keyword arguments of the SDK's `containers.run`/`create` (plus `stop_timeout`), and what to do on the host
    first: `mkdirs` (created as the invoking user, so docker does not create them as root) and `notes`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mkdirs: list[str] = []
        self.notes: list[str] = []


def _as_mount(item: MountLike) -> tuple[str, str, str]:
    if isinstance(item, Mount):
        return item["Source"], item["Target"], "ro" if item.get("ReadOnly") else "rw"
    if isinstance(item, str):
        parts = item.split(":")
        if len(parts) not in (2, 3):
            raise UsageError(f"mount {item!r} is not HOST:CONTAINER[:ro]", fix="write e.g. /data/pretrained:/pretrained:ro")
        item = tuple(parts)
    src, dst, *mode = item
    mode = mode[0] if mode else "rw"
    if mode not in ("ro", "rw"):
        raise UsageError(f"mount mode {mode!r} is neither ro nor rw", fix="use ro or rw")
    return os.path.abspath(os.path.expanduser(str(src))), str(dst), mode


def _gpu_request(gpus: Union[str, int, None]) -> Optional[DeviceRequest]:
    """"all" / N / "device=0,1" / "none" (0, None) → the SDK's DeviceRequest (= docker run --gpus ...)."""
    if gpus in (None, 0, "0", "none", ""):
        return None
    caps = [["gpu"]]
    if gpus == "all" or gpus == -1:
        return DeviceRequest(count=-1, capabilities=caps)
    if isinstance(gpus, int) or str(gpus).isdigit():
        return DeviceRequest(count=int(gpus), capabilities=caps)
    text = str(gpus)
    ids = text.split("=", 1)[1] if text.startswith("device=") else text
    return DeviceRequest(device_ids=[i.strip() for i in ids.split(",") if i.strip()], capabilities=caps)


def _load_phase(phase: Union["Phase", str, None]) -> Optional["Phase"]:
    if phase is None or not isinstance(phase, str):
        return phase
    from bevctl.phases import load_phase

    return load_phase(phase)


def run_spec(
    phase: Union["Phase", str, None] = None,
    command: Optional[list[str]] = None,
    extra_mounts: Iterable[MountLike] = (),
    env: Optional[dict[str, str]] = None,
    detach: bool = True,
    *,
    name: Optional[str] = None,
    image: Optional[str] = None,
    gpus: Union[str, int, None] = "auto",
    user: Optional[str] = None,
    root: Optional[Path] = None,
    runs_dir: Optional[Path] = None,
    role: str = "train",
    run_name: Optional[str] = None,
    labels: Optional[dict[str, str]] = None,
    network_mode: Optional[str] = None,
) -> RunSpec:
    """The container for `phase` (a Phase, a phase name, or None for the defaults) running `command`.

    gpus: "auto" (the phase's launch.gpus; without a phase, all GPUs when the host has any), "all", N,
    "device=0,1" or "none". user: "uid:gid" (default: the invoking user's). runs_dir: host runs folder (default:
    the phase's run.root under the project). network_mode: None (docker's default bridge; "host" for multi-node
    phases), "host" or "none"."""
    from bevctl.phases import ContainerSpec

    phase = _load_phase(phase)
    root = (root or project_root()).resolve()
    cspec = phase.container if phase is not None else ContainerSpec()
    image = image or cspec.image
    workdir = cspec.workdir
    uid, gid = os.getuid(), os.getgid()
    user = user or f"{uid}:{gid}"
    spec = RunSpec()

    mounts: list[tuple[str, str, str]] = [(str(root), workdir, "rw")]
    runs_root = runs_dir or Path(phase.run.root if phase is not None else "runs")
    runs_host = runs_root if runs_root.is_absolute() else root / runs_root
    mounts.append((str(runs_host), cspec.runs_mount, "rw"))
    spec.mkdirs.append(str(runs_host))

    data_root = Path(phase.data.root) if phase is not None else Path("data/nuscenes")
    data_host = data_root if data_root.is_absolute() else root / data_root
    synthetic = bool(phase is not None and phase.data.synthetic)
    if synthetic:
        # Generated data is written to a sibling temporary folder and renamed into place, which a mount point cannot
        # take: give the container the parent folder (inside the project mount already when the root is relative).
        spec.mkdirs.append(str(data_host.parent))
        if data_root.is_absolute():
            mounts.append((str(data_host.parent), str(data_root.parent), "rw"))
    elif data_host.is_dir():
        # A real dataset is never written by training: read-only, at /data/nuscenes and where the phase says.
        inside = str(data_root) if data_root.is_absolute() else f"{workdir}/{data_root.as_posix()}"
        for target in dict.fromkeys([cspec.dataset_mount, inside]):
            mounts.append((os.path.realpath(data_host), target, "ro"))  # data/nuscenes is often a symlink
    else:
        spec.notes.append(f"dataset {data_host} not found: not mounted")
    # BEVCTL_EXTRA_MOUNTS="HOST:CONTAINER[:ro];..." adds mounts to every container (pretrained weights, caches).
    env_mounts = [m.strip() for m in os.environ.get("BEVCTL_EXTRA_MOUNTS", "").split(";") if m.strip()]
    mounts += [_as_mount(m) for m in [*env_mounts, *extra_mounts]]

    if gpus == "auto":
        if phase is not None:
            gpus = phase.launch.gpus if phase.train.device != "cpu" else 0
        else:
            gpus = "all" if host_has_gpu() else 0
    gpu_request = _gpu_request(gpus)

    environment = {
        "HOME": f"/tmp/home-{user.split(':')[0]}",
        "PYTHONUNBUFFERED": "1",
        "BEVCTL_IN_CONTAINER": "1",
    }
    if gpu_request is not None:
        environment["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    environment.update(env or {})

    all_labels = {LABEL_MANAGED: "1", LABEL_PROJECT: str(root), LABEL_ROLE: role}
    if phase is not None:
        all_labels[LABEL_PHASE] = phase.name
    if run_name:
        all_labels[LABEL_RUN] = run_name
    all_labels.update(labels or {})

    if network_mode is None and phase is not None and phase.launch.nnodes > 1:
        network_mode = "host"  # NCCL cannot cross docker's bridge between nodes

    spec.update(
        image=image,
        command=list(command) if command else None,
        name=name or cspec.name,
        detach=detach,
        init=True,
        user=user,
        working_dir=workdir,
        environment=environment,
        mounts=[Mount(target=dst, source=src, type="bind", read_only=(mode == "ro")) for src, dst, mode in mounts],
        labels=all_labels,
        ulimits=_ulimits(),
        stop_signal="SIGTERM",
        stop_timeout=int(phase.train.grace_seconds) if phase is not None else 30,
    )
    if cspec.ipc_host:
        spec["ipc_mode"] = "host"
    else:
        spec["shm_size"] = cspec.shm_size
    if gpu_request is not None:
        spec["device_requests"] = [gpu_request]
    if network_mode:
        spec["network_mode"] = network_mode
    return spec


def _ulimits() -> list[Ulimit]:
    # Pinned memory and NCCL over InfiniBand want memlock unlimited (NVIDIA's container guidance). A daemon that
    # may not raise it (rootless Docker, a daemon started without LimitMEMLOCK=infinity) refuses to start the
    # container: BEVCTL_MEMLOCK=<bytes> or off chooses a lower limit or none.
    setting = os.environ.get("BEVCTL_MEMLOCK", "unlimited").strip().lower()
    limits = [Ulimit(name="stack", soft=67108864, hard=67108864)]
    if setting in ("off", "none", ""):
        return limits
    try:
        value = -1 if setting in ("unlimited", "-1") else int(setting)
    except ValueError:
        raise UsageError(f"BEVCTL_MEMLOCK={setting!r} is not a number of bytes", fix="use unlimited, off or bytes") from None
    return [Ulimit(name="memlock", soft=value, hard=value), *limits]


def train_command(phase: Union["Phase", str], run_name: str) -> list[str]:
    """The trainer as the container's main process: `python -m model.train --run-dir <runs_mount>/<run_name>`, or
    under torchrun for several GPUs or nodes (the run directory then lives in the host's runs folder)."""
    from bevctl.launch import trainer_command

    phase = _load_phase(phase)
    run_dir = f"{phase.container.runs_mount}/{run_name}"
    return trainer_command(phase, run_dir, max(1, phase.launch.gpus), python="python", torchrun=["torchrun"])


def docker_run_cmd(spec: dict) -> list[str]:
    """The `docker run` argv that does what `run_detached(spec)` does."""
    argv = ["docker", "run"]
    if spec.get("detach", True):
        argv.append("-d")
    if spec.get("name"):
        argv += ["--name", spec["name"]]
    if spec.get("init"):
        argv.append("--init")
    if spec.get("user"):
        argv += ["--user", spec["user"]]
    if spec.get("working_dir"):
        argv += ["-w", spec["working_dir"]]
    for request in spec.get("device_requests") or []:
        if request.get("DeviceIDs"):
            argv += ["--gpus", f'"device={",".join(request["DeviceIDs"])}"']
        else:
            count = request.get("Count")
            argv += ["--gpus", "all" if count == -1 else str(count)]
    if spec.get("ipc_mode"):
        argv += ["--ipc", spec["ipc_mode"]]
    if spec.get("shm_size"):
        argv += ["--shm-size", str(spec["shm_size"])]
    for limit in spec.get("ulimits") or []:
        argv += ["--ulimit", f"{limit['Name']}={limit['Soft']}:{limit['Hard']}"]
    if spec.get("network_mode"):
        argv += ["--network", spec["network_mode"]]
    for key, value in (spec.get("environment") or {}).items():
        argv += ["-e", f"{key}={value}"]
    for mount in spec.get("mounts") or []:
        argv += ["-v", f"{mount['Source']}:{mount['Target']}" + (":ro" if mount.get("ReadOnly") else "")]
    for key, value in (spec.get("labels") or {}).items():
        argv += ["--label", f"{key}={value}"]
    if spec.get("stop_signal"):
        argv += ["--stop-signal", spec["stop_signal"]]
    if spec.get("stop_timeout") is not None:
        argv += ["--stop-timeout", str(spec["stop_timeout"])]
    argv.append(spec["image"])
    argv += list(spec.get("command") or [])
    return argv


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


def run_detached(spec: dict, cli: Optional[docker.DockerClient] = None) -> str:
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


# --------------------------------------------------------------------------------------------------- containers


def get(container: Any, cli: Optional[docker.DockerClient] = None):
    """A Container from an id, a name or a Container."""
    if hasattr(container, "reload"):
        return container
    try:
        return _cli(cli).containers.get(container)
    except derrors.NotFound:
        raise UsageError(f"no container {container}", fix="list bevctl's containers with `docker ps -a --filter label=org.bevctl.managed`") from None


def wait(container: Any, timeout: Optional[float] = None, cli: Optional[docker.DockerClient] = None) -> int:
    """Block until the container exits; its exit code."""
    ctr = get(container, cli)
    try:
        return int(ctr.wait(timeout=timeout)["StatusCode"])
    except Exception as exc:  # requests' ReadTimeout when `timeout` passes
        if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
            raise TimeoutError(f"container {ctr.name} still running after {timeout} s") from None
        raise


def logs(container: Any, follow: bool = False, tail: Union[str, int] = "all", cli: Optional[docker.DockerClient] = None):
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


def stop(container: Any, grace_seconds: Optional[int] = None, cli: Optional[docker.DockerClient] = None) -> int:
    """SIGTERM the main process, SIGKILL after `grace_seconds` (default: the container's stop timeout); exit code."""
    ctr = get(container, cli)
    ctr.reload()
    if ctr.status in ("running", "restarting", "paused"):
        if grace_seconds is None:
            grace_seconds = ctr.attrs.get("Config", {}).get("StopTimeout") or 10
        ctr.stop(timeout=int(grace_seconds))
    ctr.reload()
    return int(ctr.attrs.get("State", {}).get("ExitCode", -1))


def remove(container: Any, force: bool = False, cli: Optional[docker.DockerClient] = None) -> None:
    try:
        get(container, cli).remove(force=force)
    except derrors.NotFound:
        pass


def state(container: Any, cli: Optional[docker.DockerClient] = None) -> dict[str, Any]:
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


def find_containers(labels: Optional[dict[str, str]] = None, include_stopped: bool = True, cli: Optional[docker.DockerClient] = None) -> list[dict[str, Any]]:
    """bevctl's containers (label org.bevctl.managed=1) matching every given label; running and stopped."""
    wanted = {LABEL_MANAGED: "1", **(labels or {})}
    filters = {"label": [f"{k}={v}" if v is not None else k for k, v in wanted.items()]}
    return [_describe(c) for c in _cli(cli).containers.list(all=include_stopped, filters=filters)]


def exec_in(container: Any, command: list[str], user: Optional[str] = None, cli: Optional[docker.DockerClient] = None) -> tuple[int, str]:
    """Run a command in a running container (no terminal); (exit code, output)."""
    result = get(container, cli).exec_run(command, user=user or "", demux=False)
    return int(result.exit_code), (result.output or b"").decode("utf-8", "replace")


def exec_argv(container: str, command: Optional[list[str]] = None, interactive: Optional[bool] = None) -> list[str]:
    """`docker exec -it CONTAINER bash` (no -t when stdin is not a terminal), for os.execvp."""
    if interactive is None:
        interactive = os.isatty(0)
    flags = "-it" if interactive else "-i"
    return ["docker", "exec", flags, container, *(command or ["bash"])]


def docker_cli() -> str:
    found = shutil.which("docker")
    if not found:
        raise EnvironmentUnusable(
            "the docker command-line client is not installed (bevctl shell hands the terminal to it)",
            fix="install the Docker CLI (e.g. `apt-get install docker-ce-cli` or `docker.io`)",
        )
    return found


def ensure_running(spec: dict, cli: Optional[docker.DockerClient] = None) -> tuple[str, str]:
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


def print_cmd(argv: list[str]) -> str:
    return shlex.join(argv)
