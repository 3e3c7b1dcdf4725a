"""Checkpoints: atomic save, safe load, partial load with a report, RNG state that `weights_only=True` accepts.

A checkpoint is `{"meta", "state_dict", "optimizer", "scheduler", "scaler", "rng", "data_state"}` holding only
tensors, containers and plain scalars, so `torch.load(weights_only=True)` reads every entry (never unpickle
untrusted data). `epoch_N.pth` is written first, then `latest.pth` (a hard link to it when the file system
allows, a copy otherwise; never a symlink, so it survives `cp` and bind mounts), each through a temp file,
fsync and rename: a `kill -9` at any moment leaves the previous `latest.pth` or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import random
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bevctl.atomic import atomic_path
from bevctl.errors import UsageError
from bevctl.runs import LATEST, checkpoint_name, compress_keys

# Module prefixes used to group keys in reports (the key manifest's `group`).
GROUP_DEPTH = {"encoders": 3, "decoder": 2, "task_gca": 2, "heads": 2, "fuser": 1}


def module_group(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[: GROUP_DEPTH.get(parts[0], 1)])


# --------------------------------------------------------------------------------------------- save


def save_file(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save through a temp file + fsync + rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; others (a container user) must read it
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_latest(source: Path, latest: Path) -> None:
    """Make `latest` a real file with `source`'s content, atomically."""
    with atomic_path(latest) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)  # no second copy of a multi-GB file where the file system has hard links
        except OSError:
            shutil.copyfile(source, tmp)


def save_run_checkpoint(run_dir: str | os.PathLike, state: dict, epoch: int | None, max_keep: int) -> Path:
    """Write `epoch_<epoch>.pth` (when epoch is given) then `latest.pth`; keep the newest `max_keep` epoch files.

    Returns the path written first (the epoch file, or latest.pth for a mid-epoch save).
    """
    run_dir = Path(run_dir)
    latest = run_dir / LATEST
    if epoch is None:
        return save_file(state, latest)
    path = save_file(state, run_dir / checkpoint_name(epoch))
    _publish_latest(path, latest)
    prune(run_dir, max_keep)
    return path


def prune(run_dir: Path, max_keep: int) -> list[Path]:
    epochs = sorted(
        (int(p.stem.split("_", 1)[1]), p)
        for p in run_dir.glob("epoch_*.pth")
        if p.stem.split("_", 1)[1].isdigit()
    )
    removed = [p for _, p in epochs[:-max_keep]] if max_keep > 0 else []
    for p in removed:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return removed


def remove_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Temp files a `kill -9` left mid-save (`.latest.pth.*.tmp`); call only when no save is running."""
    removed = []
    for p in Path(run_dir).glob(".*.pth.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


# --------------------------------------------------------------------------------------------- load


def load_file(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found", fix="check the path (load_from / resume / pretrained)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say so in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"checkpoint {path} cannot be read safely: {first}",
            fix="re-save it as a plain state_dict, or run `bevctl check-ckpt` on it",
        ) from None
    if not isinstance(obj, dict):
        raise UsageError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict", fix="save a state_dict")
    return obj


def extract_state_dict(ckpt: dict) -> "OrderedDict[str, torch.Tensor]":
    """The weights of a checkpoint in any of the usual wrappings, without DDP's `module.` prefix."""
    sd = ckpt
    for key in ("state_dict", "model"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


@dataclass
class LoadReport:
    path: str
    how: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # key, ckpt, model
    unexpected_missing: list[str] = field(default_factory=list)  # missing and not covered by expect_missing

    @property
    def ok(self) -> bool:
        return not self.unexpected_missing and not self.mismatched

    def groups(self) -> dict[str, dict[str, int]]:
        """Counts per module group: {group: {matched, missing, unexpected, mismatched}}."""
        out: dict[str, dict[str, int]] = {}
        for kind, keys in (
            ("matched", self.matched),
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("mismatched", [k for k, _, _ in self.mismatched]),
        ):
            for k in keys:
                g = out.setdefault(module_group(k), {"matched": 0, "missing": 0, "unexpected": 0, "mismatched": 0})
                g[kind] += 1
        return out

    def event(self) -> dict[str, Any]:
        """The `checkpoint_loaded` event's fields."""
        return {
            "path": self.path,
            "how": self.how,
            "matched": len(self.matched),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [k for k, _, _ in self.mismatched],
            "missing_globs": compress_keys(self.missing),
            "groups": self.groups(),
            "ok": self.ok,
        }

    def log_lines(self) -> list[str]:
        """mmcv's wording, so the seed's `grep "load checkpoint"` and `grep "not found in checkpoint"` work."""
        lines = [f"load checkpoint from {self.path}"]
        if self.how.startswith("pretrained:"):
            lines[0] += f" into {self.how.split(':', 1)[1]}"
        lines.append(f"matched {len(self.matched)} keys")
        if self.unexpected:
            lines.append("unexpected key in source state_dict: " + ", ".join(compress_keys(self.unexpected)))
        for key, shape_ckpt, shape_model in self.mismatched:
            lines.append(
                f"size mismatch for {key}: copying a param with shape {tuple(shape_ckpt)} from checkpoint, "
                f"the shape in current model is {tuple(shape_model)}."
            )
        if self.missing:
            lines.append("The following keys in model are not found in checkpoint: " + ", ".join(compress_keys(self.missing)))
        return lines

    def failure(self) -> str:
        """One line saying why the run must not start."""
        parts = []
        if self.unexpected_missing:
            parts.append(f"{len(self.unexpected_missing)} model keys are missing from the checkpoint and not in "
                         f"expect_missing: {', '.join(compress_keys(self.unexpected_missing))}")
        if self.mismatched:
            k, a, b = self.mismatched[0]
            more = f" (+{len(self.mismatched) - 1} more)" if len(self.mismatched) > 1 else ""
            parts.append(f"shape mismatch: {k} is {list(a)} in the checkpoint, {list(b)} in the model{more}")
        return f"{self.how} {self.path}: " + "; ".join(parts)


def _covered(key: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, g) or key == g or key.startswith(g.rstrip(".*") + ".") for g in globs)


def partial_load(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    path: str,
    how: str = "load_from",
    expect_missing: list[str] | None = None,
    prefix: str = "",
) -> LoadReport:
    """Copy every key whose name and shape match (strict=False semantics) and report the rest.

    With `prefix` (a pretrained module file), the file's keys are read relative to that module; keys that
    already carry the prefix are accepted too, and only the module's own keys count as missing.
    Nothing is copied when the report is not ok: the caller stops the run before training.
    """
    own = model.state_dict()
    if prefix:
        dotted = prefix + "."
        state_dict = {(k if k.startswith(dotted) else dotted + k): v for k, v in state_dict.items()}
        own = OrderedDict((k, v) for k, v in own.items() if k.startswith(dotted))
    report = LoadReport(path=str(path), how=how)
    accept: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, list(value.shape), list(own[key].shape)))
        else:
            accept[key] = value
            report.matched.append(key)
    report.missing = [k for k in own if k not in state_dict]
    report.unexpected_missing = [k for k in report.missing if not _covered(k, expect_missing or [])]
    if report.ok:
        with torch.no_grad():
            model.load_state_dict(accept, strict=False)
    return report


# --------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors/ints so that `weights_only=True` loads it back."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
