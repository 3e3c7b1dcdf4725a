"""The one interpretation of a checkpoint: which model key reads which checkpoint tensor, how it is converted,
and whether the load may go ahead. Torch-free: computed from names, shapes and dtypes only.

`bevctl check-ckpt`, the start preflight and doctor compute it from the file's index (`bevctl.ckpt.check`); the
trainer's loader (`model.checkpoint.partial_load`) computes it from the loaded tensors' shapes with the same
function and then applies it. Both therefore agree on the verdict and on the matched, missing, unexpected and
converted keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from bevctl.ckpt import rules
from bevctl.ckpt.compare import (ALLOWED, IGNORED, LAYOUT, MATCHED, MISMATCH, MISSING, NEW, UNEXPECTED, Comparison,
                                 Entry, compare)
from bevctl.ckpt.manifest import Manifest
from bevctl.ckpt.types import TensorInfo

BOX_CONVENTIONS = ("mmdet3d", "mit-han-lab")
LOADED = (MATCHED, LAYOUT)


@dataclass
class Plan:
    comparison: Comparison
    remap: list[tuple[str, str]]
    naming: str  # "bevfusion" (the original's module names) | "mmdet3d" (mmdet3d 1.x projects/BEVFusion)
    box_convention: str  # the checkpoint's box encoding (see model/heads/box_coder.py)
    box_convention_source: str  # "metadata" | "names"
    finite_checked: bool = False
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ sets both sides compare
    def entries(self, *statuses: str) -> list[Entry]:
        return [e for e in self.comparison.entries if e.status in statuses]

    def loads(self) -> list[Entry]:
        """What the loader copies: matched and layout-converted keys, and ignored keys present with their shape."""
        return self.entries(*LOADED) + [e for e in self.entries(IGNORED) if e.source and e.model_shape is not None]

    @property
    def matched(self) -> list[str]:
        return [e.key for e in self.entries(*LOADED)]

    @property
    def missing(self) -> list[str]:
        """Model keys the checkpoint does not fill (expected or not)."""
        return [e.key for e in self.entries(NEW, MISSING)]

    @property
    def unexpected_missing(self) -> list[str]:
        return [e.key for e in self.entries(MISSING)]

    @property
    def unexpected(self) -> list[str]:
        return [e.source or e.key for e in self.entries(UNEXPECTED, ALLOWED)]

    @property
    def mismatched(self) -> list[tuple[str, list[int], list[int]]]:
        return [(e.key, list(e.ckpt_shape or ()), list(e.model_shape or ())) for e in self.entries(MISMATCH)]

    @property
    def converted(self) -> dict[str, str]:
        """model key -> what the loader does to the checkpoint tensor (rename, permute, cast)."""
        out = {}
        for e in self.entries(*LOADED):
            if e.converted:
                bits = [f"from {e.source}"] if e.source != e.key else []
                bits += [f"permute{tuple(e.permute)}"] if e.permute is not None else []
                bits += [f"cast to {e.cast}"] if e.cast else []
                out[e.key] = ", ".join(bits)
        return out

    @property
    def nonfinite(self) -> dict[str, int]:
        """Kept weights holding NaN/inf: model key -> count."""
        return {e.key: e.nonfinite for e in self.entries(*LOADED) if e.nonfinite}

    def nonfinite_groups(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries(*LOADED):
            if e.nonfinite:
                out[e.group] = out.get(e.group, 0) + 1
        return out

    def mark_nonfinite(self, counts: Mapping[str, int]) -> None:
        """Record NaN/inf counts (checkpoint key -> count) for the kept weights; they make the plan refuse."""
        self.finite_checked = True
        for entry in self.comparison.entries:
            entry.nonfinite = int(counts.get(entry.source, 0)) if entry.source and entry.status in LOADED else 0
        for group in self.comparison.groups:
            group.counts["nonfinite"] = sum(1 for e in self.comparison.entries if e.group == group.name and e.nonfinite)

    def sources(self) -> list[str]:
        """Checkpoint keys the loader reads (those worth a finite check)."""
        return [e.source for e in self.entries(*LOADED)]

    @property
    def ok(self) -> bool:
        return not self.entries(MISSING, MISMATCH) and not self.nonfinite

    def object_head_loaded(self) -> bool:
        return any(e.group == "heads.object" for e in self.entries(*LOADED))

    def nonfinite_line(self) -> str:
        groups = self.nonfinite_groups()
        if not groups:
            return ""
        first = next(iter(self.nonfinite))
        where = ", ".join(f"{g} ({n} tensor{'s' if n > 1 else ''})" for g, n in groups.items())
        return (f"NaN/inf weights in {where}, e.g. {first} has {self.nonfinite[first]:,} non-finite values")


def make_plan(
    tensors: Mapping[str, TensorInfo],
    manifest: Manifest,
    *,
    meta: Mapping[str, Any] | None = None,
    expect_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    remap: Iterable[tuple[str, str]] = (),
    mmdet3d: bool | None = None,
    nonfinite: Mapping[str, int] | None = None,
) -> Plan:
    """The plan for loading `tensors` (checkpoint key -> TensorInfo, already unwrapped) into `manifest`'s model.

    mmdet3d 1.x names are mapped when `mmdet3d` is True, or when None and most keys carry them. `nonfinite`
    (checkpoint key -> NaN/inf count, counted by the caller from bytes or tensors) makes those weights refuse.
    """
    meta = dict(meta or {})
    user = list(remap)
    renamed = rules.apply_remap(tensors, user).values() if user else list(tensors)
    if mmdet3d is None:
        mmdet3d = rules.looks_like_mmdet3d(renamed)
    rules_used = (rules.mmdet3d_rules() if mmdet3d else []) + user
    comparison = compare(tensors, manifest, list(expect_missing), list(allow_unexpected), rules_used)
    naming = "mmdet3d" if mmdet3d else "bevfusion"
    convention, source = box_convention_of(meta, naming)
    plan = Plan(comparison, rules_used, naming, convention, source)
    if nonfinite is not None:
        plan.mark_nonfinite(nonfinite)
    return plan


def model_keys(keys: Iterable[str]) -> list[str]:
    """Checkpoint keys (already unwrapped) as the model will see them: mmdet3d 1.x names mapped when most keys carry
    them, as `make_plan` does (for callers that only need names, such as doctor's pretrained check)."""
    keys = list(keys)
    if not rules.looks_like_mmdet3d(keys):
        return keys
    return list(rules.apply_remap(keys, rules.mmdet3d_rules()).values())


def box_convention_of(meta: Mapping[str, Any], naming: str) -> tuple[str, str]:
    """The checkpoint's box encoding: its metadata's `box_convention`, else bevctl's own files (which carry a
    `bevctl_version`) and mmdet3d-named ones use mmdet3d 1.x's; other original-named ones use mit-han-lab's."""
    saved = meta.get("box_convention")
    if saved in BOX_CONVENTIONS:
        return str(saved), "metadata"
    if naming == "mmdet3d" or "bevctl_version" in meta:
        return "mmdet3d", "metadata" if "bevctl_version" in meta else "names"
    return "mit-han-lab", "names"
