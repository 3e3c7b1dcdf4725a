"""Loading with torch: the legacy (pre-1.6, non-zip) format with `weights_only=True`, and `--trust`.

`--trust` runs the file's pickle with `weights_only=False`, i.e. it may execute code from the file; callers
announce that loudly. Tensors are turned into `TensorInfo` so the rest of the check is the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bevctl.ckpt.types import CheckpointUnreadable, Loaded, TensorInfo


def torch_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def load_with_torch(path: Path, trusted: bool) -> Loaded:
    if not torch_available():
        what = "--trust needs" if trusted else "this is torch's legacy (pre-1.6, non-zip) format; reading it needs"
        raise CheckpointUnreadable(
            f"{path}: {what} torch, which is not installed here",
            fix="run the check where torch is installed (e.g. inside the training container), or re-save the file with torch>=1.6",
        )
    import torch

    def load(**kwargs: Any) -> Any:
        if trusted:  # only with an explicit --trust: the user vouches for the file, its pickle runs as code
            return torch.load(str(path), map_location="cpu", weights_only=False, **kwargs)
        return torch.load(str(path), map_location="cpu", weights_only=True, **kwargs)

    try:
        try:
            obj = load(mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = load()
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files; all are "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fix = None if trusted else "if you trust the file's origin, re-run with --trust"
        raise CheckpointUnreadable(f"{path}: torch.load failed: {first[:200]}", fix=fix) from None
    fmt = "trusted-torch" if trusted else "legacy-torch"
    return Loaded(obj=_describe(obj, torch), format=fmt, size=path.stat().st_size)


def _describe(obj: Any, torch: Any, depth: int = 0) -> Any:
    if isinstance(obj, torch.Tensor):
        dtype = str(obj.dtype).replace("torch.", "")
        bad = int((~torch.isfinite(obj)).sum()) if obj.is_floating_point() else 0
        return TensorInfo(dtype=dtype, shape=tuple(obj.shape), is_param=isinstance(obj, torch.nn.Parameter), nonfinite=bad)
    if depth > 50:
        return None
    if isinstance(obj, dict):
        return {k: _describe(v, torch, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_describe(v, torch, depth + 1) for v in obj) if not hasattr(obj, "_fields") else tuple(obj)
    if isinstance(obj, (str, int, float, bool, type(None), bytes)):
        return obj
    return f"<{type(obj).__module__}.{type(obj).__name__}>"
