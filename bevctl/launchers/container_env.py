"""What a training container gets from the host beyond mounts: environment variables, GPUs by id, InfiniBand.

Environment, later sources win: variables passed through from the host by default (`PASSTHROUGH_PREFIXES`:
NCCL tuning, Weights & Biases credentials and settings, PyTorch debug switches), then the phase's
`container.env`, then `--env KEY=VALUE` (or `--env KEY`, the host's value) on `bevctl start`/`bevctl shell`.
`BEVCTL_NO_PASSTHROUGH=1` turns the host pass-through off.

InfiniBand: when the host has `/dev/infiniband`, its devices are passed in and the container gets IPC_LOCK, which
RDMA needs to pin memory (NCCL over IB); memlock is already unlimited in bevctl's containers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from bevctl.errors import UsageError

PASSTHROUGH_PREFIXES = ("NCCL_", "WANDB_", "TORCH_")
IB_DIR = Path("/dev/infiniband")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # also what the phase schema allows in container.env


def passthrough(host: Mapping[str, str] | None = None) -> dict[str, str]:
    """The host's NCCL_*, WANDB_* and TORCH_* variables."""
    host = os.environ if host is None else host
    if host.get("BEVCTL_NO_PASSTHROUGH", "") not in ("", "0"):
        return {}
    return {k: v for k, v in host.items() if k.startswith(PASSTHROUGH_PREFIXES)}


def parse_env_args(items: Iterable[str], host: Mapping[str, str] | None = None) -> dict[str, str]:
    """`--env KEY=VALUE` / `--env KEY` (the host's value, as `docker run -e KEY` does) → a dict."""
    host = os.environ if host is None else host
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not ENV_NAME.match(key):
            raise UsageError(f"--env {item!r}: {key!r} is not a variable name",
                             fix="write --env KEY=VALUE, e.g. --env NCCL_DEBUG=INFO")
        if not sep:
            if key not in host:
                raise UsageError(f"--env {key}: {key} is not set on this host", fix=f"write --env {key}=VALUE")
            value = host[key]
        result[key] = value
    return result


def environment(phase: Any = None, cli_env: Iterable[str] = (), host: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container's extra environment: host pass-through, then `container.env`, then `--env`."""
    env = passthrough(host)
    if phase is not None:
        env.update(phase.container.env)  # names checked when the phase was loaded (bevctl.phases.ContainerSpec)
    env.update(parse_env_args(cli_env, host))
    return env


def parse_gpus(text: str | int | None) -> tuple[int | None, str | int | None]:
    """`--gpus` as `start` and `shell` take it: N, `all`, `device=0,1` (or `0,1`), `none`.

    Returns (processes per node, what docker's --gpus gets): `device=0,1` → (2, "device=0,1"); `3` → (3, 3);
    `all` → (None, "all") (the phase's launch.gpus processes); `none`/`0` → (0, None)."""
    if text is None:
        return None, None
    value = str(text).strip().lower()
    if value in ("none", "0", ""):
        return 0, None
    if value == "all":
        return None, "all"
    if value.isdigit():
        return int(value), int(value)
    ids = value.split("=", 1)[1] if value.startswith("device=") else value
    devices = [d.strip() for d in ids.split(",") if d.strip()]
    if not devices or not all(d.isdigit() or re.match(r"^(GPU|MIG)-[\w-]+$", d, re.I) for d in devices):
        raise UsageError(f"--gpus {text!r} is not a GPU count, all, or device=ID,ID",
                         fix="write --gpus 2, --gpus all or --gpus device=0,1")
    return len(devices), "device=" + ",".join(devices)


def infiniband(dev_dir: Path = IB_DIR) -> dict[str, Any]:
    """docker-py `containers.run` options for InfiniBand (devices, cap_add), empty without it on the host."""
    if not dev_dir.is_dir():
        return {}
    devices = sorted(str(p) for p in dev_dir.iterdir() if not p.is_dir())
    if not devices:
        return {}
    return {"devices": [f"{d}:{d}:rwm" for d in devices], "cap_add": ["IPC_LOCK"]}


def infiniband_summary(dev_dir: Path = IB_DIR) -> str | None:
    """One line for doctor: the RDMA devices and HCAs found, or None without InfiniBand."""
    options = infiniband(dev_dir)
    if not options:
        return None
    hcas = sorted(p.name for p in Path("/sys/class/infiniband").glob("*")) if Path("/sys/class/infiniband").is_dir() else []
    names = ", ".join(Path(d.split(":")[0]).name for d in options["devices"])
    return f"InfiniBand: {names}" + (f" (HCAs {', '.join(hcas)})" if hcas else "") + "; passed to containers with IPC_LOCK"


def check_infiniband(ctx: Any):
    """doctor's `gpu.infiniband`: what the training containers will get for NCCL across nodes."""
    summary = infiniband_summary()
    phase = getattr(ctx, "phase", None)
    if summary:
        return "ok", summary, None
    if phase is not None and phase.launch.nnodes > 1:
        return ("warn", f"no /dev/infiniband: {phase.launch.nnodes} nodes will talk NCCL over TCP sockets (slow)",
                "install the RDMA drivers (MLNX_OFED / rdma-core) on the nodes, or accept TCP")
    return "skipped", "no /dev/infiniband on this host (single-node training does not need it)", None
