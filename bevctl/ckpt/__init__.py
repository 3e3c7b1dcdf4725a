"""Validate a checkpoint against the model's keys before launch, without torch and without running its pickle.

Python API (used by `bevctl check-ckpt` and the launcher's preflight)::

    from bevctl.ckpt import check
    report = check("runs/phase3/epoch_5.pth", phase="phase4a")      # or model_config="full", gca="task", ...
    report.ok, report.exit_code          # True/0 compatible; False/1 incompatible
    report.to_json()                     # {"schema": 1, ...}
    report.render()                      # Rich report on stdout (or render(console))

Unreadable, unsafe or non-checkpoint files raise `bevctl.ckpt.CheckpointUnreadable` (a `UsageError`, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from bevctl.ckpt import rules
from bevctl.ckpt.checkpoint import Checkpoint, open_checkpoint
from bevctl.ckpt.compare import LAYOUT, MATCHED, MISMATCH, MISSING, UNEXPECTED, compare
from bevctl.ckpt.manifest import Manifest, load_manifest
from bevctl.ckpt.reader import CheckpointUnreadable
from bevctl.ckpt.report import Report
from bevctl.errors import UsageError

__all__ = ["check", "Report", "CheckpointUnreadable", "open_checkpoint", "load_manifest"]


def check(
    path: str | Path | None = None,
    phase: Any = None,
    model_config: str | None = None,
    gca: str | None = None,
    heads: Iterable[str] | None = None,
    expect_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    remap: Iterable[str] = (),
    mmdet3d: bool = False,
    trust: bool = False,
    live: bool = False,
    manifest: Manifest | None = None,
) -> Report:
    """Compare the checkpoint at `path` with the model; `phase` (a name, a YAML path or a `Phase`) supplies the
    model config, GCA mode, heads and expectations, and `path` when omitted (its `load_from`, else a `resume` path).
    Explicit arguments win over the phase; globs from both are used."""
    expect = list(expect_missing)
    allow = list(allow_unexpected)
    phase_name = None
    if phase is not None:
        if isinstance(phase, (str, Path)):
            from bevctl.phases import load_phase

            phase = load_phase(str(phase))
        phase_name = phase.name
        model_config = model_config or phase.model.config
        gca = gca or phase.model.gca
        heads = heads if heads is not None else list(phase.model.heads)
        expect = list(phase.expect_missing) + [g for g in expect if g not in phase.expect_missing]
        allow = list(phase.allow_unexpected) + [g for g in allow if g not in phase.allow_unexpected]
        if path is None:
            path = phase.load_from or (phase.resume if phase.resume and phase.resume != "auto" else None)
            if path is None:
                raise UsageError(f"phase {phase.name} has no load_from or resume path to check",
                                 fix="give the checkpoint path: bevctl check-ckpt FILE --phase ...")
    if path is None:
        raise UsageError("no checkpoint given", fix="bevctl check-ckpt FILE [--phase NAME]")
    model_config = model_config or "full"
    gca = gca or "task"
    remap_rules = (rules.mmdet3d_rules() if mmdet3d else []) + rules.parse_remap(remap)

    ckpt = open_checkpoint(path, trust=trust)
    if manifest is None:
        manifest = load_manifest(model_config, gca, heads=heads, live=live)
    elif heads is not None:
        manifest = manifest.only_heads(heads)
    comparison = compare(ckpt, manifest, expect, allow, remap_rules)
    report = Report(ckpt, manifest, comparison, expect, allow, remap_rules, phase=phase_name, trusted=trust)
    report.suggestions = _suggestions(report, ckpt, manifest, remap_rules, mmdet3d)
    report.notes = _notes(report, ckpt, manifest, trust)
    return report


def _suggestions(report: Report, ckpt: Checkpoint, manifest: Manifest, remap_rules: list, mmdet3d: bool) -> dict:
    suggestions: dict[str, Any] = {}
    entries = report.comparison.entries
    missing = [e.key for e in entries if e.status == MISSING]
    if missing:
        # the globs must not reach keys that load or are already expected, only the missing ones
        missing_set = set(missing)
        present = [k for k in manifest.keys if k not in missing_set]
        suggestions["expect_missing"] = rules.expect_missing_globs(missing, present)
    unexpected = [e.key for e in entries if e.status == UNEXPECTED]
    if unexpected:
        suggestions["allow_unexpected"] = rules.expect_missing_globs(unexpected, list(manifest.keys))
    renamed = rules.apply_remap(ckpt.tensors, remap_rules) if remap_rules else {k: k for k in ckpt.tensors}
    if not mmdet3d and rules.looks_like_mmdet3d(renamed.values()):
        suggestions["mmdet3d"] = rules.mmdet3d_rules()
    else:
        # only worth a search when many checkpoint keys found no home in the model
        homeless = sum(1 for e in entries if e.status in (UNEXPECTED, MISMATCH))
        if homeless > 0.1 * len(ckpt.tensors):
            matched = sum(1 for e in entries if e.status in (MATCHED, LAYOUT))
            shapes = {renamed[k]: t.shape for k, t in ckpt.tensors.items()}
            model = {k: v.shape for k, v in manifest.keys.items()}
            found = rules.suggest_prefix(shapes, model, matched)
            if found:
                suggestions["prefix"] = {"regex": found[0], "replacement": found[1], "matches": found[2]}
    return suggestions


def _notes(report: Report, ckpt: Checkpoint, manifest: Manifest, trust: bool) -> list[str]:
    notes = []
    if trust:
        notes.append("loaded with torch.load(weights_only=False) because of --trust: the file's pickle ran as code")
    if report.comparison.collisions:
        notes.append(f"--remap mapped several checkpoint keys onto one name (e.g. {report.comparison.collisions[0]}); "
                     "the last one wins")
    layout = report.entries(LAYOUT)
    if layout:
        notes.append(f"{len(layout)} sparse-conv weights use the other spconv layout; they load after a fixed permute "
                     "(bevctl.ckpt.rules.SPCONV_PERMUTE), not as-is")
    half = [k for k, t in ckpt.tensors.items() if t.dtype in ("float16", "bfloat16")]
    if half and manifest.keys:
        notes.append(f"{len(half)} tensors are stored as {ckpt.tensors[half[0]].dtype}; they load into float32 "
                     "parameters with reduced precision")
    for field_name, value in (("gca", manifest.gca), ("model_config", manifest.config)):
        saved = ckpt.meta.get(field_name)
        if saved is not None and str(saved) != str(value):
            notes.append(f"the checkpoint was saved by a model with {field_name} {saved!r}; checking against {value!r}")
    if not ckpt.tensors:
        notes.append("the checkpoint holds no tensors")
    return notes
