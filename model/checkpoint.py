"""Checkpoints: atomic save, safe load, partial load with a report, RNG state that `weights_only=True` accepts.

Loading follows the plan `bevctl.ckpt.plan.make_plan` computes from names, shapes and dtypes (the same function
behind `bevctl check-ckpt` and the start preflight): container unwrapping, mmdet3d 1.x names, spconv 1.x kernels,
casts, NaN/inf refusal, the object head's box convention. This module only applies it to the tensors.

A checkpoint is `{"meta", "state_dict", "optimizer", "scheduler", "scaler", "rng", "data_state"}` holding only
tensors, containers and plain scalars, so `torch.load(weights_only=True)` reads every entry (never unpickle
untrusted data). `epoch_N.pth` is written first, then `latest.pth` (a hard link to it when the file system
allows, a copy otherwise; never a symlink, so it survives `cp` and bind mounts), each through a temp file,
fsync and rename: a `kill -9` at any moment leaves the previous `latest.pth` or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import errno
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
from bevctl.ckpt import rules
from bevctl.ckpt.checkpoint import read_meta, unwrap
from bevctl.ckpt.files import regular_file, sniff
from bevctl.ckpt.manifest import manifest_from_state
from bevctl.ckpt.plan import Plan, make_plan
from bevctl.ckpt.types import CheckpointUnreadable, TensorInfo
from bevctl.errors import UsageError
from bevctl.runs import (
    LATEST,
    checkpoint_name,
    compress_keys,
    forget_saved_checkpoints,
    read_manifest,
    record_saved_checkpoint,
)

def module_group(key: str) -> str:
    """The report group of a state-dict key (`encoders.camera.backbone`, `heads.object`, ...)."""
    return rules.group_of(key)


# --------------------------------------------------------------------------------------------- save


def save_file(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save through a temp file + fsync + rename. A full disk, a read-only folder or a permission error
    becomes one EnvironmentUnusable line with the fix; the previous file at `path` is left as it was."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            # Through a Python file: its write errors keep their errno (torch's own writer reports only
            # "iostream error"), so the message can say what is wrong with the disk.
            with open(tmp, "wb") as f:
                torch.save(obj, f)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; others (a container user) must read it
    except (OSError, RuntimeError) as exc:
        raise _save_error(exc, path) from None
    return path


# What the disk said, in words, and how to fix it.
_SAVE_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free space there (df -h {dir})"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota (quota -s) or move run.root"),
    errno.EFBIG: ("the file size limit was reached", "raise the limit (ulimit -f unlimited) or move run.root"),
    errno.EROFS: ("the file system is read-only", "remount it read-write or set run.root to a writable folder"),
    errno.EACCES: ("permission denied", "make {dir} writable for this user (ls -ld {dir})"),
    errno.EPERM: ("operation not permitted", "make {dir} writable for this user (ls -ld {dir})"),
}


def _save_error(exc: BaseException, path: Path) -> Exception:
    """The OSError behind a failed save (torch wraps it in a RuntimeError) as one line with the fix."""
    from bevctl.errors import EnvironmentUnusable

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    code = getattr(cause, "errno", None)
    if code not in _SAVE_ERRORS:
        if isinstance(exc, OSError) or cause is not None:
            what = (cause or exc).strerror or str(cause or exc)
            return EnvironmentUnusable(f"cannot save checkpoint {path}: {what}",
                                       fix=f"check the folder {path.parent} (df -h, ls -ld), then resume the run")
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    words, fix = _SAVE_ERRORS[code]
    resume = "; the previous checkpoint is intact, continue with --resume auto"
    return EnvironmentUnusable(f"cannot save checkpoint {path}: {words}", fix=fix.format(dir=path.parent) + resume)


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
    record_saved_checkpoint(run_dir, path.name)  # before anything else: pruning deletes only what is recorded
    try:
        _publish_latest(path, latest)
    except OSError as exc:
        raise _save_error(exc, latest) from None
    prune(run_dir, max_keep)
    return path


def prune(run_dir: Path, max_keep: int) -> list[Path]:
    """Delete the oldest epoch files beyond `max_keep` among those this run saved (run.json `saved_checkpoints`):
    an `epoch_*.pth` the run did not write (the user's own, one it was resumed from) is never touched."""
    manifest = read_manifest(run_dir) or {}
    ours = set(manifest.get("saved_checkpoints") or [])
    epochs = sorted(
        (int(p.stem.split("_", 1)[1]), p)
        for p in run_dir.glob("epoch_*.pth")
        if p.stem.split("_", 1)[1].isdigit() and p.name in ours
    )
    removed = [p for _, p in epochs[:-max_keep]] if max_keep > 0 else []
    for p in removed:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    if removed:
        forget_saved_checkpoints(run_dir, [p.name for p in removed])
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


class StateDict(OrderedDict):
    """A checkpoint's weights, with the scalars of its `meta` (the box convention, model config ...) attached."""

    meta: dict[str, Any]


def load_file(path: str | os.PathLike) -> dict:
    """A checkpoint file as a dict: `torch.load(weights_only=True)` for torch files, safetensors' own loader for
    `.safetensors` (its `__metadata__` becomes `meta`). Regular files only; every failure is one line."""
    path = Path(path)
    try:
        kind = sniff(regular_file(path))
    except CheckpointUnreadable as exc:
        if not path.exists():
            raise UsageError(f"checkpoint {path} not found", fix="check the path (load_from / resume / pretrained)") from None
        raise UsageError(exc.message, fix=exc.fix) from None
    if kind == "safetensors":
        return _load_safetensors(path)
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


def _load_safetensors(path: Path) -> dict:
    try:
        from safetensors import safe_open
    except ImportError:
        raise UsageError(f"{path} is a .safetensors file and the safetensors package is not installed",
                         fix="pip install safetensors (it is part of bevctl's train extra)") from None
    from bevctl.ckpt.safetensors import read_safetensors

    read_safetensors(path)  # the same size/depth/offset checks as check-ckpt, before safetensors parses it
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            state = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - the library raises its own error types for damaged files
        raise UsageError(f"checkpoint {path} cannot be read: {str(exc).splitlines()[0] if str(exc) else exc}",
                         fix="copy the file again, or run `bevctl check-ckpt` on it") from None
    return {"meta": meta, "state_dict": state}


def extract_state_dict(ckpt: dict) -> StateDict:
    """The weights of a checkpoint in any of the usual wrappings (`state_dict`, `model`, `module`, `ema`, nested,
    `module.`/`_orig_mod.` prefixes), found exactly as `bevctl check-ckpt` finds them; `.meta` holds its meta."""
    try:
        found = unwrap(ckpt, lambda v: isinstance(v, torch.Tensor))
    except CheckpointUnreadable as exc:
        raise UsageError(exc.message, fix=exc.fix or "save a state_dict") from None
    out = StateDict(found.tensors)
    out.meta = read_meta(ckpt) if isinstance(ckpt, dict) else {}
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
    converted: dict[str, str] = field(default_factory=dict)  # model key -> rename / permute / cast applied
    nonfinite: dict[str, int] = field(default_factory=dict)  # kept weights with NaN/inf -> count
    plan: Plan | None = None

    @classmethod
    def from_plan(cls, plan: Plan, path: str, how: str) -> "LoadReport":
        return cls(path=str(path), how=how, matched=plan.matched, missing=plan.missing, unexpected=plan.unexpected,
                   mismatched=plan.mismatched, unexpected_missing=plan.unexpected_missing,
                   converted=plan.converted, nonfinite=plan.nonfinite, plan=plan)

    @property
    def ok(self) -> bool:
        return not self.unexpected_missing and not self.mismatched and not self.nonfinite

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
            "converted": len(self.converted),
            "nonfinite": sorted(self.nonfinite),
            "box_convention": self.plan.box_convention if self.plan is not None and self.plan.object_head_loaded() else None,
            "groups": self.groups(),
            "ok": self.ok,
        }

    def log_lines(self) -> list[str]:
        """mmcv's wording, so the seed's `grep "load checkpoint"` and `grep "not found in checkpoint"` work."""
        lines = [f"load checkpoint from {self.path}"]
        if self.how.startswith("pretrained:"):
            lines[0] += f" into {self.how.split(':', 1)[1]}"
        lines.append(f"matched {len(self.matched)} keys")
        if self.converted:
            kinds = [kind for kind, word in (("renamed", "from "), ("spconv 1.x kernels permuted", "permute("),
                                             ("cast", "cast to ")) if any(word in how for how in self.converted.values())]
            lines.append(f"converted {len(self.converted)} keys ({', '.join(kinds)}): "
                         + ", ".join(compress_keys(list(self.converted))))
        if self.plan is not None and self.plan.naming == "mmdet3d":
            lines.append("mapped mmdetection3d 1.x BEVFusion names to this model's")
        if self.plan is not None and self.plan.object_head_loaded():
            lines.append(f"box convention of the loaded object head: {self.plan.box_convention}")
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
        if self.nonfinite and self.plan is not None:
            parts.append(self.plan.nonfinite_line())
        if self.unexpected_missing:
            parts.append(f"{len(self.unexpected_missing)} model keys are missing from the checkpoint and not in "
                         f"expect_missing: {', '.join(compress_keys(self.unexpected_missing))}")
        if self.mismatched:
            k, a, b = self.mismatched[0]
            more = f" (+{len(self.mismatched) - 1} more)" if len(self.mismatched) > 1 else ""
            parts.append(f"shape mismatch: {k} is {list(a)} in the checkpoint, {list(b)} in the model{more}")
        return f"{self.how} {self.path}: " + "; ".join(parts)


def _info(t: torch.Tensor) -> TensorInfo:
    return TensorInfo(str(t.dtype).replace("torch.", ""), tuple(t.shape))


def plan_for(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, expect_missing: list[str] | None = None,
             allow_unexpected: list[str] | None = None, prefix: str = "", finite: bool = True,
             meta: dict | None = None) -> tuple[Plan, dict[str, torch.Tensor]]:
    """The load plan for `state_dict` into `model` (bevctl.ckpt.plan.make_plan on the tensors' shapes and dtypes),
    and the state dict it refers to (re-keyed under `prefix` for a module file)."""
    own = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    if meta is None:
        meta = getattr(state_dict, "meta", None) or {}
    if prefix:
        dotted = prefix + "."
        state_dict = {(k if k.startswith(dotted) else dotted + k): v for k, v in state_dict.items()}
        own = OrderedDict((k, v) for k, v in own.items() if k.startswith(dotted))
    manifest = manifest_from_state(own, params)
    plan = make_plan({k: _info(v) for k, v in state_dict.items()}, manifest, meta=meta,
                     expect_missing=expect_missing or [], allow_unexpected=allow_unexpected or [])
    if finite:
        plan.mark_nonfinite({k: int((~torch.isfinite(state_dict[k])).sum()) for k in plan.sources()
                             if state_dict[k].is_floating_point()})
    return plan, state_dict


def partial_load(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    path: str,
    how: str = "load_from",
    expect_missing: list[str] | None = None,
    prefix: str = "",
    allow_unexpected: list[str] | None = None,
    finite: bool = True,
    meta: dict | None = None,
) -> LoadReport:
    """Load what the plan keeps (name and shape match after unwrapping, mmdet3d names, spconv layout and casts)
    and report the rest; strict=False semantics for unexpected keys.

    With `prefix` (a pretrained module file), the file's keys are read relative to that module; keys that
    already carry the prefix are accepted too, and only the module's own keys count as missing.
    Nothing is copied when the report is not ok: the caller stops the run before training. When the object head
    is loaded, its box coder takes the checkpoint's box convention, so it decodes the boxes it was trained on.
    """
    plan, state_dict = plan_for(model, state_dict, expect_missing=expect_missing, allow_unexpected=allow_unexpected,
                                prefix=prefix, finite=finite, meta=meta)
    report = LoadReport.from_plan(plan, str(path), how)
    if not report.ok:
        return report
    own = model.state_dict()
    accept: OrderedDict[str, torch.Tensor] = OrderedDict()
    for entry in plan.loads():
        tensor = state_dict[entry.source]
        if entry.permute is not None:
            tensor = tensor.permute(*entry.permute).contiguous()
        accept[entry.key] = tensor.to(own[entry.key].dtype)
    # The tensors are in this model's layout now: they go in with the model's own module versions, so a loader
    # keyed on the version leaves them as they are (mmdet3d, once imported, permutes every sparse kernel of a
    # state dict without version 2 as if it were spconv 1.x: ours would be turned twice).
    accept._metadata = getattr(own, "_metadata", None)  # type: ignore[attr-defined]
    with torch.no_grad():
        model.load_state_dict(accept, strict=False)
    if plan.object_head_loaded():
        set_box_convention(model, plan.box_convention)
    return report


def _object_coder(model: torch.nn.Module) -> Any:
    heads = getattr(model, "heads", None)
    head = heads["object"] if heads is not None and "object" in heads else None
    return getattr(head, "bbox_coder", None)


def box_convention(model: torch.nn.Module) -> str | None:
    """The object head's box convention (None without an object head): what checkpoints record in `meta`."""
    coder = _object_coder(getattr(model, "module", model))
    return getattr(coder, "convention", None)


def set_box_convention(model: torch.nn.Module, convention: str) -> None:
    coder = _object_coder(getattr(model, "module", model))
    if coder is not None:
        coder.convention = convention


def checkpoint_meta(model: torch.nn.Module) -> dict[str, Any]:
    """Model facts every checkpoint's `meta` carries so a later load interprets the weights right."""
    convention = box_convention(model)
    return {"box_convention": convention} if convention else {}


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
