"""Run specifications: a phase (or the defaults) as the SDK's container arguments, and the same spec as the
equivalent `docker run` line, so `--print-cmd` shows exactly what bevctl does.

Containers run as the invoking user's uid:gid with HOME=/tmp/home-<uid>, under an init (signals reach the main
process), with the memlock/stack ulimits NVIDIA recommends, shared memory for DataLoader workers, the project at
`bevctl.paths.WORKDIR`, runs/ read-write and the dataset read-only (generated synthetic data: its parent folder
read-write)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Union

from docker.types import DeviceRequest, Mount, Ulimit

from bevctl.docker.daemon import LABEL_MANAGED, LABEL_PHASE, LABEL_PROJECT, LABEL_ROLE, LABEL_RUN, host_has_gpu, project_root
from bevctl.errors import UsageError
from bevctl.launchers import container_env
from bevctl.trainer import trainer_command

if TYPE_CHECKING:
    from bevctl.phases import Phase

MountLike = Union[str, tuple, Mount]

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


def extra_env_mounts(taken: Iterable[str] = ()) -> list[tuple[str, str, str]]:
    """BEVCTL_EXTRA_MOUNTS, validated (bevctl.names.validate_mounts); UsageError with the fix when wrong."""
    from bevctl.names import validate_mounts

    return validate_mounts(os.environ.get("BEVCTL_EXTRA_MOUNTS", ""), taken=taken)


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
    # BEVCTL_EXTRA_MOUNTS="HOST:CONTAINER[:ro];..." adds mounts to every container (pretrained weights, caches):
    # existing absolute host paths, absolute container paths, none twice and none over bevctl's own.
    mounts += extra_env_mounts(taken=[dst for _, dst, _ in mounts])
    mounts += [_as_mount(m) for m in extra_mounts]

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
    # The host's NCCL_*/WANDB_*/TORCH_*, then the phase's container.env, then the caller's (--env).
    environment.update(container_env.environment(phase))
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
    spec.update(container_env.infiniband())  # /dev/infiniband devices + IPC_LOCK, when the host has them
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
    phase = _load_phase(phase)
    run_dir = f"{phase.container.runs_mount}/{run_name}"
    return trainer_command(phase, run_dir, phase.launch.processes_per_node, python="python", torchrun=["torchrun"])


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
    for device in spec.get("devices") or []:
        argv += ["--device", device]
    for cap in spec.get("cap_add") or []:
        argv += ["--cap-add", cap]
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
