"""Weight checks: load_from, resume and the pretrained files exist and look like checkpoints.

"Looks like a checkpoint" is decided from the header only (zip directory of torch.save's format, or the legacy
pickle magic) and, for load_from, the state-dict keys read by `bevctl.ckpt`'s restricted unpickler, which maps
tensors to inert records and refuses any other global: nothing in the file is ever executed.
A pretrained file is not needed when load_from already fills that module (the seed's fix 2: phase 4a loads
epoch_5.pth, so swint-nuimages-pretrained.pth is irrelevant).
"""

from __future__ import annotations

import fnmatch
import zipfile
from pathlib import Path

from bevctl.doctor.core import Context, short_path

LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled 0x1950a86a20f9469cfc6c


class NotACheckpoint(Exception):
    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


def inspect_checkpoint(path: Path) -> str:
    """A one-line description of a readable checkpoint, or NotACheckpoint(message, fix)."""
    if not path.exists():
        dangling = " (a dangling symlink)" if path.is_symlink() else ""
        raise NotACheckpoint(f"{short_path(path)} not found{dangling}", "")
    if path.is_dir():
        raise NotACheckpoint(f"{short_path(path)} is a directory, not a checkpoint file", "point at the .pth file")
    if not path.is_file():  # a FIFO or a device: opening it could block for ever
        raise NotACheckpoint(f"{short_path(path)} is not a regular file", "point at the .pth file")
    size = path.stat().st_size
    if size == 0:
        raise NotACheckpoint(f"{short_path(path)} is empty (0 bytes)", "download or copy it again")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise NotACheckpoint(f"{short_path(path)} is not readable: {exc.strerror}", f"chmod a+r {path}") from None
    human = f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise NotACheckpoint(f"{short_path(path)} is truncated or corrupt ({exc})",
                                 "the copy or download was cut short: copy it again (compare sizes / sha256)") from None
        if not any(n.endswith("data.pkl") for n in names):
            raise NotACheckpoint(f"{short_path(path)} is a zip file but not a torch checkpoint (no data.pkl)",
                                 "point at the .pth file written by torch.save")
        return f"torch checkpoint, {human}"
    if head.startswith(LEGACY_MAGIC):
        return f"torch checkpoint (legacy format), {human}"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return f"pickle file (not torch.save's format), {human}"
    text = head.decode("utf-8", "replace")
    if text.startswith("version https://git-lfs"):
        raise NotACheckpoint(f"{short_path(path)} is a Git LFS pointer, not the file", "git lfs pull")
    if text.lstrip().lower().startswith(("<!doctype", "<html")):
        raise NotACheckpoint(f"{short_path(path)} is an HTML page (a failed download)", "download it again (check the link)")
    start = " ".join(text.split())[:24]
    raise NotACheckpoint(f"{short_path(path)} is not a checkpoint (starts with {start!r})",
                         "point at a .pth file written by torch.save")


def tensor_names(path: Path) -> set[str] | None:
    """The state-dict keys of a torch zip checkpoint, read by `bevctl.ckpt` (restricted unpickler: no code runs, no
    tensor data is read, `module.` prefixes stripped); None when that is not possible."""
    if not zipfile.is_zipfile(path):  # legacy files would need torch: too slow for a doctor check
        return None
    try:
        from bevctl.ckpt.checkpoint import open_checkpoint
        from bevctl.ckpt.plan import model_keys

        return set(model_keys(open_checkpoint(path).tensors))  # mmdet3d 1.x names as the trainer maps them
    except Exception:  # an odd pickle only loses the confirmation, never the check
        return None


def _missing_fix(ctx: Context, value: str) -> str:
    """Name the phase that produces a missing runs/<name>/... checkpoint, when a shipped one does."""
    parts = Path(value).parts
    if "pretrained" in parts[:-1]:
        return f"download it to {value} (tools/download_pretrained.sh of the original BEVFusion), or fix load_from"
    if len(parts) >= 2:
        run_name = parts[-2]
        try:
            from bevctl.phases import load_phase, shipped_phases

            for name in sorted(shipped_phases()):
                if load_phase(name).run.name == run_name and (ctx.phase is None or name != ctx.phase.name):
                    return f"train that phase first: bevctl start {name} (or --set load_from=PATH)"
        except Exception:
            pass
    return "fix the path (--set load_from=PATH) or train the earlier phase first"


def check_load_from(ctx: Context):
    if ctx.phase is None:
        return "skipped", "no phase given (--phase P)", None
    value = ctx.phase.load_from
    if not value:
        return "skipped", "the phase has no load_from", None
    path = ctx.path(value)
    try:
        description = inspect_checkpoint(path)
    except NotACheckpoint as exc:
        return "fail", f"load_from: {exc}", exc.fix or _missing_fix(ctx, value)
    return "ok", f"load_from {short_path(path)}: {description}", None


def check_resume(ctx: Context):
    if ctx.phase is None:
        return "skipped", "no phase given (--phase P)", None
    value = ctx.phase.resume
    if not value:
        return "skipped", "the phase does not resume", None
    if value == "auto":
        return "ok", "resume: auto (continues from the run's latest.pth when it has one)", None
    path = ctx.path(value)
    try:
        return "ok", f"resume {short_path(path)}: {inspect_checkpoint(path)}", None
    except NotACheckpoint as exc:
        return "fail", f"resume: {exc}", exc.fix or "fix the path, or use resume: auto"


def covered_by_load_from(ctx: Context, prefix: str) -> str | None:
    """Why `prefix` needs no pretrained file (load_from fills it), or None when it does need one."""
    phase = ctx.phase
    if not phase.load_from:
        return None
    probe = prefix + ".weight"
    if any(fnmatch.fnmatchcase(probe, glob) or fnmatch.fnmatchcase(prefix, glob) for glob in phase.expect_missing):
        return None  # the phase says load_from lacks this module
    path = ctx.path(phase.load_from)
    names = tensor_names(path) if path.is_file() else None
    if names is not None and not any(n.startswith(prefix + ".") for n in names):
        return None
    seen = " (its keys are in the checkpoint)" if names else ""
    return f"load_from covers {prefix}{seen}"


def check_pretrained(ctx: Context):
    if ctx.phase is None:
        return "skipped", "no phase given (--phase P)", None
    if not ctx.phase.pretrained:
        return "skipped", "the phase lists no pretrained files", None
    oks, fails, fixes = [], [], []
    for prefix, value in ctx.phase.pretrained.items():
        covered = covered_by_load_from(ctx, prefix)
        if covered:
            oks.append(f"{Path(value).name} not needed: {covered}")
            continue
        path = ctx.path(value)
        try:
            oks.append(f"{prefix}: {short_path(path)} ({inspect_checkpoint(path)})")
        except NotACheckpoint as exc:
            fails.append(f"{prefix}: {exc}")
            fixes.append(exc.fix or f"download it to {value} (tools/download_pretrained.sh of the original), "
                                    f"or let {prefix} start from scratch: --set pretrained={{}}")
    if fails:
        return "fail", "; ".join(fails + oks), "; ".join(dict.fromkeys(fixes))
    return "ok", "; ".join(oks), None
