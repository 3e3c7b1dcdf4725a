"""From a loaded object to the state dict the model would see: unwrap nesting, strip wrapper prefixes, find meta.

`unwrap` works on any tensor type (an `is_tensor` test is passed in), so the trainer's loader (real tensors) and
`bevctl check-ckpt` (`TensorInfo` records) find the same state dict under the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bevctl.ckpt.files import read_any, regular_file
from bevctl.ckpt.types import ITEMSIZE, CheckpointUnreadable, Loaded, TensorInfo

# Searched in this order at each level: the trained weights before an EMA copy of them.
NESTING_KEYS = ("state_dict", "model", "module", "model_state", "net", "ema", "model_ema", "ema_state_dict")
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
    path = regular_file(Path(path).expanduser())
    return from_loaded(path, read_any(path, trust=trust))


@dataclass
class Unwrapped:
    tensors: dict[str, Any]
    nesting: list[str]
    stripped: dict[str, int]
    inner: dict  # the dict the tensors came from
    non_tensor_entries: int


def unwrap(obj: Any, is_tensor: Callable[[Any], bool], where: str = "the checkpoint") -> Unwrapped:
    """The state dict inside a saved object: follow NESTING_KEYS until a dict of mostly tensors, then strip DDP's
    `module.` and torch.compile's `_orig_mod.` prefixes."""
    if not isinstance(obj, dict):
        raise CheckpointUnreadable(f"{where} holds a {type(obj).__name__}, not a checkpoint (a dict of tensors)")
    top = obj
    nesting: list[str] = []
    while not _is_state_dict(obj, is_tensor):
        inner = next((k for k in NESTING_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None or len(nesting) > 8:
            break
        nesting.append(inner)
        obj = obj[inner]
    if not _is_state_dict(obj, is_tensor):
        keys = ", ".join(str(k) for k in list(top)[:8])
        raise CheckpointUnreadable(f"{where} holds no state dict (a dict whose values are tensors); top-level keys: {keys}")
    tensors = {str(k): v for k, v in obj.items() if is_tensor(v)}
    tensors, stripped = strip_wrappers(tensors)
    return Unwrapped(tensors, nesting, stripped, obj, sum(1 for v in obj.values() if not is_tensor(v)))


def _is_info(value: Any) -> bool:
    return isinstance(value, TensorInfo)


def from_loaded(path: Path, loaded: Loaded) -> Checkpoint:
    top = loaded.obj
    found = unwrap(top, _is_info, str(path))
    nested = top is not found.inner
    return Checkpoint(
        path=path,
        format=loaded.format,
        size=loaded.size,
        tensors=found.tensors,
        nesting=found.nesting,
        stripped=found.stripped,
        meta={**loaded.meta, **read_meta(top)},
        top_level=[str(k) for k in top] if nested else [],
        optimizer=_optimizer(top.get("optimizer")) if nested else None,
        non_tensor_entries=found.non_tensor_entries,
    )


def _is_state_dict(obj: Any, is_tensor: Callable[[Any], bool]) -> bool:
    if not isinstance(obj, dict) or not obj:
        return False
    n = sum(1 for v in obj.values() if is_tensor(v))
    return n > 0 and n >= len(obj) / 2


def strip_wrappers(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
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


def read_meta(top: dict) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    source = top.get("meta")
    if isinstance(source, dict):
        meta.update({str(k): v for k, v in source.items() if isinstance(v, META_SCALARS)
                     or (isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v))})
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
