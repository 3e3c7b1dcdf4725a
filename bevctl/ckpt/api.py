"""`bevctl.ckpt.check`: a checkpoint file against the model, with the load plan the trainer will apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from bevctl.ckpt import rules
from bevctl.ckpt.checkpoint import Checkpoint, open_checkpoint
from bevctl.ckpt.compare import LAYOUT, MATCHED, MISMATCH, UNEXPECTED
from bevctl.ckpt.manifest import Manifest, load_manifest
from bevctl.ckpt.plan import Plan, make_plan
from bevctl.ckpt.report import Report
from bevctl.ckpt.types import CheckpointUnreadable
from bevctl.errors import UsageError

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
    finite: bool = True,
) -> Report:
    """Compare the checkpoint at `path` with the model; `phase` (a name, a YAML path or a `Phase`) supplies the
    model config, GCA mode, heads and expectations, and `path` when omitted (its `load_from`, else a `resume` path).
    Explicit arguments win over the phase; globs from both are used. Without either, the model is inferred from
    the checkpoint's metadata or shapes. mmdet3d 1.x names are mapped when most keys carry them (`mmdet3d=True`
    forces it); `finite=False` skips reading the tensors' bytes for NaN/inf."""
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
    user_rules = rules.parse_remap(remap)

    ckpt = open_checkpoint(path, trust=trust)
    inferred = None
    if manifest is None and model_config is None:
        from bevctl.ckpt.infer import infer_model

        inferred = infer_model(ckpt.tensors, ckpt.meta)
        if inferred is not None:
            model_config, gca = model_config or inferred.config, gca or inferred.gca
            heads = heads if heads is not None else inferred.heads
    model_config = model_config or "full"
    gca = gca or "task"
    if manifest is None:
        manifest = load_manifest(model_config, gca, heads=heads, live=live)
    elif heads is not None:
        manifest = manifest.only_heads(heads)
    plan = make_plan(ckpt.tensors, manifest, meta=ckpt.meta, expect_missing=expect, allow_unexpected=allow,
                     remap=user_rules, mmdet3d=True if mmdet3d else None)
    if finite:
        from bevctl.ckpt.finite import count_nonfinite

        plan.mark_nonfinite(count_nonfinite(ckpt.path, ((k, ckpt.tensors[k]) for k in plan.sources())))
    report = Report(ckpt, manifest, plan.comparison, expect, allow, plan.remap, phase=phase_name, trusted=trust,
                    plan=plan, inferred=inferred)
    if inferred is None and not report.ok:
        report.looks_like = _looks_like(ckpt, manifest, plan)
    report.suggestions = _suggestions(report, ckpt, manifest, plan)
    report.notes = _notes(report, ckpt, manifest, trust)
    return report


def _looks_like(ckpt: Checkpoint, manifest: Manifest, plan: Plan) -> Any:
    """Another packaged model that fits clearly better, when most of the checkpoint does not fit this one."""
    from bevctl.ckpt.infer import infer_model

    fits = len(plan.entries(MATCHED, LAYOUT)) / max(1, len(ckpt.tensors))
    if fits >= 0.5:
        return None
    other = infer_model(ckpt.tensors, ckpt.meta)
    if other is None or (other.config, other.gca) == (manifest.config, manifest.gca) or other.score < fits + 0.25:
        return None
    return other


def _suggestions(report: Report, ckpt: Checkpoint, manifest: Manifest, plan: Plan) -> dict:
    suggestions: dict[str, Any] = {}
    if report.looks_like is not None:
        return suggestions  # the wrong model: globs for its missing keys would only mislead
    entries = report.comparison.entries
    missing = plan.unexpected_missing
    if missing:
        # the globs must not reach keys that load or are already expected, only the missing ones
        missing_set = set(missing)
        present = [k for k in manifest.keys if k not in missing_set]
        suggestions["expect_missing"] = rules.expect_missing_globs(missing, present)
    unexpected = [e.key for e in entries if e.status == UNEXPECTED]
    if unexpected:
        suggestions["allow_unexpected"] = rules.expect_missing_globs(unexpected, list(manifest.keys))
    # only worth a search when many checkpoint keys found no home in the model
    homeless = sum(1 for e in entries if e.status in (UNEXPECTED, MISMATCH))
    if homeless > 0.1 * len(ckpt.tensors):
        renamed = rules.apply_remap(ckpt.tensors, plan.remap) if plan.remap else {k: k for k in ckpt.tensors}
        matched = len(plan.matched)
        shapes = {renamed[k]: t.shape for k, t in ckpt.tensors.items()}
        model = {k: v.shape for k, v in manifest.keys.items()}
        found = rules.suggest_prefix(shapes, model, matched)
        if found:
            suggestions["prefix"] = {"regex": found[0], "replacement": found[1], "matches": found[2]}
    return suggestions


def _notes(report: Report, ckpt: Checkpoint, manifest: Manifest, trust: bool) -> list[str]:
    plan = report.plan
    notes = []
    if trust:
        notes.append("loaded with torch.load(weights_only=False) because of --trust: the file's pickle ran as code")
    if report.inferred is not None:
        how = "its metadata" if report.inferred.how == "metadata" else "its tensor shapes"
        notes.append(f"model inferred from {how}: {report.inferred.describe()} "
                     "(--model-config/--gca or --phase choose another)")
    if plan.naming == "mmdet3d":
        notes.append(f"mmdetection3d 1.x BEVFusion names, mapped to this model's ({report.comparison.remapped:,} keys "
                     "renamed; the trainer maps them the same way)")
    if plan.object_head_loaded():
        how = "its metadata" if plan.box_convention_source == "metadata" else "its key names"
        notes.append(f"box convention {plan.box_convention} (from {how}); the object head decodes boxes that way")
    if report.comparison.collisions:
        notes.append(f"--remap mapped several checkpoint keys onto one name (e.g. {report.comparison.collisions[0]}); "
                     "the last one wins")
    layout = report.entries(LAYOUT)
    if layout:
        notes.append(f"{len(layout)} sparse-conv weights use the spconv 1.x layout; they load after a fixed permute "
                     "(bevctl.ckpt.rules.SPCONV_PERMUTE), not as-is")
    half = [k for k, t in ckpt.tensors.items() if t.dtype in ("float16", "bfloat16")]
    if half and manifest.keys:
        notes.append(f"{len(half)} tensors are stored as {ckpt.tensors[half[0]].dtype}; they load into float32 "
                     "parameters with reduced precision")
    if not plan.finite_checked:
        notes.append("values not checked for NaN/inf (--no-finite-check)")
    for field_name, value in (("gca", manifest.gca), ("model_config", manifest.config)):
        saved = ckpt.meta.get(field_name)
        if saved is not None and str(saved) != str(value):
            notes.append(f"the checkpoint was saved by a model with {field_name} {saved!r}; checking against {value!r}")
    if not ckpt.tensors:
        notes.append("the checkpoint holds no tensors")
    return notes
