"""Compare a checkpoint's tensors with the model's key manifest, key by key, and sum up per module group.

Each loadable entry says exactly what the loader does with it: which checkpoint key it reads (`source`), the
sparse-conv permutation (`permute`) and the dtype it is cast to (`cast`). `bevctl check-ckpt` reports these
entries; the trainer's loader (model/checkpoint.py) applies them to the real tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Mapping

from bevctl.ckpt import rules
from bevctl.ckpt.manifest import Manifest
from bevctl.ckpt.types import FLOAT_DTYPES, TensorInfo

# Entry statuses; "layout" = spconv weight that loads after a fixed permutation.
MATCHED, LAYOUT, NEW, MISSING, MISMATCH, UNEXPECTED, ALLOWED, IGNORED = (
    "matched", "layout", "new", "missing", "mismatch", "unexpected", "allowed", "ignored",
)


@dataclass
class Entry:
    key: str
    group: str
    status: str
    ckpt_shape: tuple[int, ...] | None = None
    model_shape: tuple[int, ...] | None = None
    numel: int = 0  # model numel for model keys, checkpoint numel otherwise
    is_param: bool = True
    note: str = ""  # glob that allowed it, ignore reason, layout conversion, original key before remap
    source: str = ""  # the checkpoint's key (after unwrapping) this entry reads
    permute: tuple[int, ...] | None = None  # applied to the checkpoint tensor before the copy
    cast: str | None = None  # the model's dtype when the checkpoint stores another float type
    nonfinite: int = 0  # NaN/inf values in the checkpoint tensor (when counted)

    @property
    def converted(self) -> bool:
        return self.permute is not None or self.cast is not None or (bool(self.source) and self.source != self.key)

    def to_json(self) -> dict:
        data = {"key": self.key, "group": self.group, "status": self.status}
        if self.source and self.source != self.key:
            data["source"] = self.source
        if self.permute is not None:
            data["permute"] = list(self.permute)
        if self.cast is not None:
            data["cast"] = self.cast
        if self.nonfinite:
            data["nonfinite"] = self.nonfinite
        if self.ckpt_shape is not None:
            data["checkpoint_shape"] = list(self.ckpt_shape)
        if self.model_shape is not None:
            data["model_shape"] = list(self.model_shape)
        data["numel"] = self.numel
        if self.note:
            data["note"] = self.note
        return data


@dataclass
class Group:
    name: str
    in_model: bool = True
    keys: int = 0
    params: int = 0  # parameter count of the model's group (buffers and ignored keys excluded)
    counts: dict[str, int] = field(default_factory=dict)  # status -> keys
    param_counts: dict[str, int] = field(default_factory=dict)  # status -> parameters (model params only)

    @property
    def kept_params(self) -> int:
        return self.param_counts.get(MATCHED, 0) + self.param_counts.get(LAYOUT, 0)

    # Counts by meaning, for callers such as the launcher's preflight.
    @property
    def matched_keys(self) -> int:
        return self.counts.get(MATCHED, 0) + self.counts.get(LAYOUT, 0)

    @property
    def missing_keys(self) -> int:
        """Model keys the checkpoint does not fill, expected (new) or not."""
        return self.counts.get(NEW, 0) + self.counts.get(MISSING, 0)

    @property
    def missing_params(self) -> int:
        return self.param_counts.get(NEW, 0) + self.param_counts.get(MISSING, 0)

    @property
    def mismatched_keys(self) -> int:
        return self.counts.get(MISMATCH, 0)

    @property
    def coverage(self) -> float:
        if self.params:
            return self.kept_params / self.params
        kept = self.counts.get(MATCHED, 0) + self.counts.get(LAYOUT, 0)
        return kept / self.keys if self.keys else 0.0

    @property
    def verdict(self) -> str:
        c = self.counts
        if c.get(MISSING) or c.get(MISMATCH) or c.get("nonfinite"):
            return "problem"
        if not self.in_model:
            return "allowed" if not c.get(UNEXPECTED) else "unused"
        kept = c.get(MATCHED, 0) + c.get(LAYOUT, 0)
        if c.get(NEW) and not kept:
            return "new"
        if c.get(NEW):
            return "partial"
        return "kept"

    def to_json(self) -> dict:
        return {
            "group": self.name,
            "in_model": self.in_model,
            "verdict": self.verdict,
            "keys": self.keys,
            "params": self.params,
            "kept_params": self.kept_params,
            "coverage": round(self.coverage, 6),
            "counts": {s: self.counts.get(s, 0)
                       for s in (MATCHED, LAYOUT, NEW, MISSING, MISMATCH, UNEXPECTED, ALLOWED, IGNORED, "nonfinite")},
            "param_counts": {s: self.param_counts.get(s, 0) for s in (MATCHED, LAYOUT, NEW, MISSING, MISMATCH)},
        }


@dataclass
class Comparison:
    entries: list[Entry]
    groups: list[Group]
    remapped: int = 0  # checkpoint keys renamed by --remap / --mmdet3d
    collisions: list[str] = field(default_factory=list)


def compare(
    ckpt_tensors: Mapping[str, TensorInfo],
    manifest: Manifest,
    expect_missing: list[str],
    allow_unexpected: list[str],
    remap: list[tuple[str, str]],
) -> Comparison:
    ckpt_tensors = getattr(ckpt_tensors, "tensors", ckpt_tensors)  # a Checkpoint is accepted too
    renamed = rules.apply_remap(ckpt_tensors, remap) if remap else {k: k for k in ckpt_tensors}
    tensors = {}
    collisions = []
    for old, new in renamed.items():
        if new in tensors:
            collisions.append(new)
        tensors[new] = (ckpt_tensors[old], old)
    entries: list[Entry] = []
    for key, spec in manifest.keys.items():
        found = tensors.get(key)
        is_param = spec.kind == "param"
        reason = rules.ignore_reason(key)
        if reason:
            entries.append(Entry(key, spec.group, IGNORED, found[0].shape if found else None, spec.shape, spec.numel,
                                 is_param, reason, source=found[1] if found and found[0].shape == spec.shape else ""))
            continue
        if found is None:
            glob = rules.matches_any(key, expect_missing)
            status, note = (NEW, glob) if glob else (MISSING, "")
            entries.append(Entry(key, spec.group, status, None, spec.shape, spec.numel, is_param, note))
            continue
        info, old = found
        note = f"from {old}" if old != key else ""
        cast = spec.dtype if info.dtype != spec.dtype and info.dtype in FLOAT_DTYPES and spec.dtype in FLOAT_DTYPES else None
        if info.shape == spec.shape:
            entries.append(Entry(key, spec.group, MATCHED, info.shape, spec.shape, spec.numel, is_param, note,
                                 source=old, cast=cast))
            continue
        layout = rules.spconv_layout(info.shape, spec.shape)
        if layout:
            perm = rules.SPCONV_PERMUTE[layout]
            entries.append(Entry(key, spec.group, LAYOUT, info.shape, spec.shape, spec.numel, is_param,
                                 f"{layout}: permute{perm}" + (f"; {note}" if note else ""),
                                 source=old, permute=perm, cast=cast))
        else:
            entries.append(Entry(key, spec.group, MISMATCH, info.shape, spec.shape, spec.numel, is_param, note,
                                 source=old))
    for key, (info, old) in tensors.items():
        if key in manifest.keys:
            continue
        group = rules.group_of(key)
        reason = rules.ignore_reason(key)
        if reason:
            entries.append(Entry(key, group, IGNORED, info.shape, None, info.numel, info.is_param, reason, source=old))
            continue
        glob = rules.matches_any(key, allow_unexpected) or rules.matches_any(old, allow_unexpected)
        note = glob or (f"from {old}" if old != key else "")
        entries.append(Entry(key, group, ALLOWED if glob else UNEXPECTED, info.shape, None, info.numel, info.is_param,
                             note, source=old))
    return Comparison(entries=entries, groups=_groups(entries, manifest),
                      remapped=sum(1 for o, n in renamed.items() if o != n), collisions=collisions)


def _groups(entries: list[Entry], manifest: Manifest) -> list[Group]:
    groups: dict[str, Group] = {name: Group(name) for name in manifest.groups}
    for key in manifest.keys.values():
        group = groups.setdefault(key.group, Group(key.group))
        group.keys += 1
        # recomputed geometry (vtransform frustum/dx/bx/nx) is a frozen nn.Parameter in BEVFusion: not "training"
        if key.kind == "param" and not rules.ignore_reason(key.name):
            group.params += key.numel
    for entry in entries:
        group = groups.get(entry.group)
        if group is None:
            group = groups[entry.group] = Group(entry.group, in_model=False)
        group.counts[entry.status] = group.counts.get(entry.status, 0) + 1
        if entry.status in (MATCHED, LAYOUT, NEW, MISSING, MISMATCH) and entry.key in manifest.keys \
                and manifest.keys[entry.key].kind == "param":
            group.param_counts[entry.status] = group.param_counts.get(entry.status, 0) + entry.numel
    return list(groups.values())
