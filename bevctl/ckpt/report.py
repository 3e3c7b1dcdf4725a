"""The result of a check: verdict and exit code, a stable JSON form (`"schema": 1`) and a Rich rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bevctl.ckpt.checkpoint import Checkpoint
from bevctl.ckpt.compare import ALLOWED, IGNORED, LAYOUT, MATCHED, MISMATCH, MISSING, NEW, UNEXPECTED, Comparison
from bevctl.ckpt.manifest import Manifest
from bevctl.ckpt.rules import remap_arg, shell_quote

SCHEMA = 1
VERDICT_MARK = {"kept": "✅ kept", "new": "✨ new", "partial": "✅ kept + ✨ new", "problem": "❌ problem",
                "unused": "⚠ unused", "allowed": "➖ allowed"}
SHOW = 10  # rows per detail list in the human report; --json has them all


@dataclass
class Report:
    checkpoint: Checkpoint
    manifest: Manifest
    comparison: Comparison
    expect_missing: list[str]
    allow_unexpected: list[str]
    remap: list[tuple[str, str]]
    phase: str | None = None
    trusted: bool = False
    suggestions: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plan: Any = None  # bevctl.ckpt.plan.Plan
    inferred: Any = None  # bevctl.ckpt.infer.Inferred when the model came from the checkpoint itself
    looks_like: Any = None  # an Inferred that fits clearly better than the model checked against

    # ------------------------------------------------------------------ verdict

    def entries(self, *statuses: str) -> list:
        return [e for e in self.comparison.entries if e.status in statuses]

    @property
    def ok(self) -> bool:
        return self.plan.ok if self.plan is not None else not self.entries(MISSING, MISMATCH)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def kept_params(self) -> int:
        return sum(e.numel for e in self.entries(MATCHED, LAYOUT) if e.is_param and e.model_shape is not None)

    @property
    def groups(self) -> list:
        return self.comparison.groups

    @property
    def summary(self) -> dict[str, Any]:
        """Totals by meaning (the `summary` of `to_json()`)."""
        used = sorted({e.note for e in self.entries(NEW) if e.note})
        return {
            "kept_params": self.kept_params,
            "matched_params": self.kept_params,
            "matched_keys": len(self.entries(MATCHED, LAYOUT)),
            "new_params": sum(e.numel for e in self.entries(NEW) if e.is_param),
            "missing_params": sum(e.numel for e in self.entries(MISSING) if e.is_param),
            "missing_globs": used,  # the --expect-missing globs that covered missing keys
            **{status: len(self.entries(status)) for status in (MATCHED, LAYOUT, NEW, MISSING, MISMATCH, UNEXPECTED, ALLOWED, IGNORED)},
        }

    def fix(self) -> str:
        """What to do about an incompatible checkpoint, as one line ("" when compatible)."""
        if self.ok:
            return ""
        if self.looks_like is not None:
            return (f"check it against that model: --model-config {self.looks_like.config} --gca {self.looks_like.gca}"
                    " (or fix the phase's model section)")
        if self.plan is not None and self.plan.nonfinite:
            return "use an earlier checkpoint of that run (its weights diverged); bevctl check-ckpt FILE lists them"
        s = self.suggestions
        if s.get("prefix"):
            p = s["prefix"]
            return f"rename the checkpoint's keys: --remap {remap_arg(p['regex'], p['replacement'])}"
        if self.entries(MISMATCH):
            return "the checkpoint was trained with another model config (see the shape mismatches)"
        globs = s.get("expect_missing", [])
        return "if those modules are meant to start from scratch, add expect_missing: " + ", ".join(globs)

    def headline(self) -> str:
        """One line in the seed's words: what keeps its training, what is new, what is wrong."""
        parts = [f"{_approx(self.kept_params)} parameters keep their training"]
        for group in self.comparison.groups:
            new = group.param_counts.get(NEW, 0)
            if new:
                parts.append(f"{group.name} {new:,} new")
        missing = self.entries(MISSING)
        mismatch = self.entries(MISMATCH)
        if missing:
            parts.append(f"{len(missing)} keys missing ({sum(e.numel for e in missing if e.is_param):,} parameters)")
        if mismatch:
            parts.append(f"{len(mismatch)} shape mismatches")
        layout = self.entries(LAYOUT)
        if layout:
            parts.append(f"{len(layout)} spconv weights need a layout conversion")
        if self.plan is not None and self.plan.nonfinite:
            parts.append(self.plan.nonfinite_line())
        return "; ".join(parts)

    def looks_like_line(self) -> str:
        other = self.looks_like
        return (f"this looks like a {other.config} checkpoint ({other.describe()}; {100 * other.score:.0f}% of its "
                f"tensors fit), not {self.manifest.config} gca {self.manifest.gca}")

    def failure_line(self) -> str:
        """What `bevctl check-ckpt` says on exit 1, with the exact flags that would accept the missing keys."""
        bits = []
        if self.looks_like is not None:
            return f"incompatible: {self.looks_like_line()}; {self.fix()}"
        if self.plan is not None and self.plan.nonfinite:
            bits.append(self.plan.nonfinite_line())
        missing = self.entries(MISSING)
        if missing:
            globs = self.suggestions.get("expect_missing", [])
            flags = " ".join(f"--expect-missing {shell_quote(g)}" for g in globs)
            bits.append(f"{len(missing)} model keys missing from the checkpoint outside the expected globs; "
                        f"if they are meant to start from scratch, add: {flags}")
        mismatch = self.entries(MISMATCH)
        if mismatch:
            first = mismatch[0]
            bits.append(f"{len(mismatch)} shape mismatches (e.g. {first.key}: checkpoint {list(first.ckpt_shape)} "
                        f"vs model {list(first.model_shape)}) — wrong model config for this checkpoint?")
        return "incompatible: " + "; ".join(bits)

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        ck = self.checkpoint
        man = self.manifest
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "verdict": "compatible" if self.ok else "incompatible",
            "headline": self.headline(),
            "checkpoint": {
                "path": str(ck.path),
                "format": ck.format,
                "bytes": ck.size,
                "trusted_load": self.trusted,
                "nesting": ck.nesting,
                "stripped_prefixes": ck.stripped,
                "tensors": len(ck.tensors),
                "numel": ck.num_params,
                "meta": ck.meta,
                "top_level_keys": ck.top_level,
                "optimizer": ck.optimizer,
            },
            "model": {
                "config": man.config,
                "gca": man.gca,
                "heads": man.heads,
                "manifest": man.source,
                "model_version": man.model_version,
                "keys": len(man.keys),
                "params": sum(k.numel for k in man.keys.values() if k.kind == "param"),
            },
            "phase": self.phase,
            "expect_missing": self.expect_missing,
            "allow_unexpected": self.allow_unexpected,
            "remap": [f"{p}={r}" for p, r in self.remap],
            "summary": self.summary,
            "groups": [g.to_json() for g in self.comparison.groups],
            "entries": {
                status: [e.to_json() for e in self.entries(status)]
                for status in (LAYOUT, NEW, MISSING, MISMATCH, UNEXPECTED, ALLOWED, IGNORED)
            },
            "suggestions": self.suggestions,
            "notes": self.notes,
            "plan": self._plan_json(),
            "inferred": vars(self.inferred) if self.inferred is not None else None,
            "looks_like": vars(self.looks_like) if self.looks_like is not None else None,
        }

    def _plan_json(self) -> dict[str, Any] | None:
        plan = self.plan
        if plan is None:
            return None
        return {"naming": plan.naming, "box_convention": plan.box_convention,
                "box_convention_source": plan.box_convention_source, "converted": plan.converted,
                "finite_checked": plan.finite_checked, "nonfinite": plan.nonfinite,
                "nonfinite_groups": plan.nonfinite_groups()}

    # ------------------------------------------------------------------ human

    def render(self, console: Any = None) -> None:
        """The human report, printed in one go (one Rich call is markedly cheaper than one per line)."""
        from bevctl.console import out

        console = console or out()
        console.print("\n".join(self.lines()), soft_wrap=True, highlight=False)

    def lines(self) -> list[str]:
        from rich.cells import cell_len

        from bevctl.console import escape

        ck = self.checkpoint
        man = self.manifest
        lines = []
        if self.looks_like is not None:
            lines.append(f"[bold red]{escape(self.looks_like_line())}[/]")
        source = f"[{ck.format}]"
        if ck.nesting:
            source += " " + "/".join(f"['{n}']" for n in ck.nesting)
        lines.append(f"[bold]checkpoint[/] {escape(str(ck.path))}  {_size(ck.size)}  {escape(source)}  "
                     f"{len(ck.tensors):,} tensors, {_approx(ck.num_params)} values")
        for prefix, n in ck.stripped.items():
            lines.append(f"  stripped [cyan]{escape(prefix)}[/] from {n:,} keys")
        if ck.meta:
            shown = ", ".join(f"{k} {v}" for k, v in ck.meta.items())
            lines.append(f"  meta: {escape(shown[:300])}")
        if ck.optimizer:
            o = ck.optimizer
            lines.append(f"  optimizer state: present ({o['params_with_state']:,} params, {o['tensors']:,} tensors, "
                         f"{_size(o['bytes'])}); a weights-only load does not use it")
        elif ck.top_level:
            lines.append("  optimizer state: absent")
        lines.append(f"[bold]model[/] {escape(man.config)}, gca {man.gca}, heads {'+'.join(man.heads)}  "
                     f"({escape(man.source)}{', ' + escape(man.model_version) if man.model_version else ''})")
        if self.expect_missing or self.allow_unexpected:
            where = f"phase {self.phase}" if self.phase else "given"
            bits = [f"expect missing {', '.join(self.expect_missing)}"] if self.expect_missing else []
            bits += [f"allow unexpected {', '.join(self.allow_unexpected)}"] if self.allow_unexpected else []
            lines.append(f"  expectations ({escape(where)}): {escape('; '.join(bits))}")
        if self.remap:
            lines.append(f"  remap: {escape(' '.join(remap_arg(p, r) for p, r in self.remap))} "
                         f"({self.comparison.remapped:,} keys renamed)")

        header = ["group", "verdict", "keys", "params kept", "coverage", "new", "missing", "mismatch", "unexpected", "ignored"]
        if self.plan is not None and self.plan.nonfinite:
            header.append("NaN/inf")
        rows = []
        for g in self.comparison.groups:
            c = g.counts
            kept = c.get(MATCHED, 0) + c.get(LAYOUT, 0)
            rows.append([
                g.name,
                VERDICT_MARK[g.verdict],
                f"{kept}/{g.keys - c.get(IGNORED, 0)}" if g.in_model else "-",
                f"{g.kept_params:,}/{g.params:,}" if g.in_model else "-",
                f"{100 * g.coverage:.1f}%" if g.in_model else "-",
                _n(c.get(NEW)), _n(c.get(MISSING)), _n(c.get(MISMATCH)),
                _n(c.get(UNEXPECTED, 0) + c.get(ALLOWED, 0)), _n(c.get(IGNORED)),
            ] + ([_n(c.get("nonfinite"))] if len(header) > 10 else []))
        widths = [max(cell_len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def fmt(cells: list[str], style: str = "") -> str:
            padded = []
            for i, cell in enumerate(cells):
                pad = " " * (widths[i] - cell_len(cell))
                padded.append(cell + pad if i < 2 else pad + cell)
            text = escape("  ".join(padded))
            return f"[{style}]{text}[/]" if style else text

        lines.append(fmt(header, "bold"))
        for row in rows:
            style = "red" if row[1].startswith("❌") else ""
            lines.append(fmt(row, style))

        if self.plan is not None and self.plan.nonfinite:
            bad = [e for e in self.entries(MATCHED, LAYOUT) if e.nonfinite]
            lines.append(f"[bold]non-finite weights[/] ({len(bad)}):")
            lines.extend(f"  {escape(e.key)}: {e.nonfinite:,} NaN/inf of {e.numel:,}" for e in bad[:SHOW])
        self._detail(lines, MISMATCH, "shape mismatch",
                     lambda e: f"{e.key}: checkpoint {list(e.ckpt_shape)} vs model {list(e.model_shape)}")
        self._detail(lines, MISSING, "missing (not expected)", lambda e: f"{e.key} {list(e.model_shape)}")
        self._detail(lines, LAYOUT, "layout conversion (spconv 1.x weights)",
                     lambda e: f"{e.key}: {list(e.ckpt_shape)} -> {list(e.model_shape)} ({e.note})")
        self._detail(lines, UNEXPECTED, "unexpected (in the checkpoint, not in the model; not loaded)",
                     lambda e: f"{e.key} {list(e.ckpt_shape)}")
        ignored = self.entries(IGNORED)
        if ignored:
            reasons: dict[str, int] = {}
            for e in ignored:
                reasons[e.note] = reasons.get(e.note, 0) + 1
            lines.append(f"[dim]ignored by rule ({len(ignored)}): "
                         + escape("; ".join(f"{n} × {r}" for r, n in reasons.items())) + "[/]")
        for note in self.notes:
            lines.append(f"[yellow]note:[/] {escape(note)}")
        for line in self.suggestion_lines():
            lines.append(f"[cyan]suggestion:[/] {escape(line)}")
        mark = "[green]✅ compatible[/]" if self.ok else "[red]❌ incompatible[/]"
        lines.append(f"{mark}: {escape(self.headline())}")
        if not self.ok:
            lines.append(escape(self.failure_line()))
        return lines

    def suggestion_lines(self) -> list[str]:
        lines = []
        s = self.suggestions
        if s.get("prefix"):
            p = s["prefix"]
            lines.append(f"{p['matches']:,} checkpoint keys match under another prefix: --remap {remap_arg(p['regex'], p['replacement'])}")
        if s.get("allow_unexpected"):
            lines.append("to silence the unexpected keys: " +
                         " ".join(f"--allow-unexpected {shell_quote(g)}" for g in s["allow_unexpected"]))
        return lines

    def _detail(self, lines: list[str], status: str, title: str, fmt: Any) -> None:
        from bevctl.console import escape

        rows = self.entries(status)
        if not rows:
            return
        lines.append(f"[bold]{title}[/] ({len(rows)}):")
        lines.extend(f"  {escape(fmt(e))}" for e in rows[:SHOW])
        if len(rows) > SHOW:
            lines.append(f"  … {len(rows) - SHOW} more (--json lists all)")


def _n(value: int | None) -> str:
    return f"{value:,}" if value else "-"


def _approx(n: int) -> str:
    if n >= 1_000_000:
        return f"{n:,} (~{n / 1e6:.1f}M)" if n < 10_000_000 else f"{n:,} (~{n / 1e6:.0f}M)"
    return f"{n:,}"


def _size(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"
