"""The distributed environment as torchrun sets it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*), or one process.
Under `torchpack dist-run` (mpirun) the OpenMPI variables are mapped onto those names when this module is imported.

Multi-node needs nothing here beyond what torchrun's rendezvous exports. Collectives degrade to no-ops when
the world has one process, so the training loop reads the same either way.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def adopt_mpi_env(env=os.environ) -> None:
    """torchpack dist-run starts ranks with mpirun: OpenMPI's OMPI_COMM_WORLD_* and torchpack's MASTER_HOST
    (host:port) instead of torchrun's variables. Map them, so every reader of RANK agrees; torchrun's win."""
    if "WORLD_SIZE" in env or "OMPI_COMM_WORLD_SIZE" not in env:
        return
    env["WORLD_SIZE"] = env["OMPI_COMM_WORLD_SIZE"]
    env["RANK"] = env.get("OMPI_COMM_WORLD_RANK", "0")
    env["LOCAL_RANK"] = env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")
    env["LOCAL_WORLD_SIZE"] = env.get("OMPI_COMM_WORLD_LOCAL_SIZE", env["WORLD_SIZE"])
    host, _, port = env.get("MASTER_HOST", "").rpartition(":")
    if host and port and "MASTER_ADDR" not in env:
        env["MASTER_ADDR"], env["MASTER_PORT"] = host, port


# On import: model.train reads RANK before it joins the process group.
adopt_mpi_env()


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` takes this process's GPU when CUDA works, else the CPU; `cuda` without a GPU is a usage error."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from bevctl.errors import EnvironmentUnusable

        raise EnvironmentUnusable("train.device is cuda but no CUDA device is usable", fix="set train.device=cpu or auto")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init(device_preference: str = "auto", timeout_minutes: int = 30) -> DistInfo:
    """Join the process group torchrun describes (NCCL on GPU, gloo on CPU); one process when there is none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=device if device.type == "cuda" else None,
        )
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank when it is true on any: ranks must agree to stop or skip a step together."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_dict(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar metrics over ranks (one all-reduce for the whole dict)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def max_float(value: float, info: DistInfo) -> float:
    if not info.distributed:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's object on rank 0 (a list in rank order); other ranks get an empty list."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out if info.is_main else []


def broadcast_object(obj, info: DistInfo):
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_tensor_(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a tensor over ranks, in place."""
    if info.distributed:
        dist.all_reduce(t)
        t /= info.world_size
    return t
