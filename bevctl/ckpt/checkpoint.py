"""From a loaded object to the state dict the model would see: unwrap nesting, strip wrapper prefixes, find meta."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bevctl.ckpt.reader import CheckpointUnreadable, Loaded, TensorInfo, read_any

NESTING_KEYS = ("state_dict", "model", "module", "model_state", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile
META_SCALARS = (str, int, float, bool)


@dataclass
class Checkpoint:
    path: Path
    format: str
    size: int
    tensors: dict[str, TensorInfo]
    nesting: list[str] = field(default_factory=list)  # e.g. ["state_dict"]
    stripped: dict[str, int] = field(default_factory=dict)  # prefix -> keys stripped
    meta: dict[str, Any] = field(default_factory=dict)
    top_level: list[str] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None  # {"tensors": n, "bytes": b, "params": p} when optimizer state is present
    non_tensor_entries: int = 0

    @property
    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())


def open_checkpoint(path: str | Path, trust: bool = False) -> Checkpoint:
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointUnreadable(f"{path} not found", fix="check the path (ls -l)")
    return from_loaded(path, read_any(path, trust=trust))


def from_loaded(path: Path, loaded: Loaded) -> Checkpoint:
    obj = loaded.obj
    if not isinstance(obj, dict):
        raise CheckpointUnreadable(f"{path} holds a {type(obj).__name__}, not a checkpoint (a dict of tensors)")
    top = obj
    nesting: list[str] = []
    while not _is_state_dict(obj):
        inner = next((k for k in NESTING_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        nesting.append(inner)
        obj = obj[inner]
    if not _is_state_dict(obj):
        keys = ", ".join(str(k) for k in list(top)[:8])
        raise CheckpointUnreadable(f"{path} holds no state dict (a dict whose values are tensors); top-level keys: {keys}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, TensorInfo)}
    tensors, stripped = strip_wrappers(tensors)
    return Checkpoint(
        path=path,
        format=loaded.format,
        size=loaded.size,
        tensors=tensors,
        nesting=nesting,
        stripped=stripped,
        meta={**loaded.meta, **_meta(top)},
        top_level=[str(k) for k in top] if top is not obj else [],
        optimizer=_optimizer(top.get("optimizer")) if top is not obj else None,
        non_tensor_entries=sum(1 for v in obj.values() if not isinstance(v, TensorInfo)),
    )


def _is_state_dict(obj: Any) -> bool:
    if not isinstance(obj, dict) or not obj:
        return False
    n = sum(isinstance(v, TensorInfo) for v in obj.values())
    return n > 0 and n >= len(obj) / 2


def strip_wrappers(tensors: dict[str, TensorInfo]) -> tuple[dict[str, TensorInfo], dict[str, int]]:
    """Strip `module.`/`_orig_mod.` (repeatedly, in any order) when at least half the keys carry it."""
    stripped: dict[str, int] = {}
    changed = True
    while changed and tensors:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            count = sum(k.startswith(prefix) for k in tensors)
            if count and count >= len(tensors) / 2:
                tensors = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}
                stripped[prefix] = stripped.get(prefix, 0) + count
                changed = True
    return tensors, stripped


def _meta(top: dict) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    source = top.get("meta")
    if isinstance(source, dict):
        meta.update({str(k): v for k, v in source.items() if isinstance(v, META_SCALARS)})
    for key in ("epoch", "iter", "global_step", "step", "version"):
        if isinstance(top.get(key), META_SCALARS) and key not in meta:
            meta[key] = top[key]
    return meta


def _optimizer(opt: Any) -> dict[str, Any] | None:
    if not isinstance(opt, dict):
        return None
    state = opt.get("state")
    tensors = 0
    nbytes = 0
    from bevctl.ckpt.reader import ITEMSIZE

    if isinstance(state, dict):
        for entry in state.values():
            if isinstance(entry, dict):
                for value in entry.values():
                    if isinstance(value, TensorInfo):
                        tensors += 1
                        nbytes += value.numel * ITEMSIZE.get(value.dtype, 4)
    groups = opt.get("param_groups")
    return {
        "params_with_state": len(state) if isinstance(state, dict) else 0,
        "tensors": tensors,
        "bytes": nbytes,
        "param_groups": len(groups) if isinstance(groups, list) else 0,
    }
