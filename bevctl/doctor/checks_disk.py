"""Disk checks: the runs folder is writable, and has room for the checkpoints the phase keeps."""

from __future__ import annotations

import errno
import json
import math
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from bevctl.doctor.core import Context, short_path

# Parameters when no key manifest is shipped yet: the seed's ~132M for the full model plus 0.26M of GCA.
FALLBACK_PARAMS = {"full": 132_500_000, "tiny": 3_000_000}
OPTIMIZER_COPIES = 2  # AdamW keeps exp_avg and exp_avg_sq next to the weights


def _runs_root(ctx: Context) -> Path:
    return ctx.path(ctx.phase.run.root if ctx.phase is not None else "runs")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def model_params(config: str, gca: str) -> int:
    try:
        manifest = resources.files("bevctl") / "manifests" / f"{config}-{gca}.json"
        keys = json.loads(manifest.read_text())["keys"]
        return sum(math.prod(k["shape"]) for k in keys if k.get("kind", "param") == "param")
    except Exception:  # no shipped manifest for this config (or a custom YAML model): a conservative guess
        return FALLBACK_PARAMS.get(config, FALLBACK_PARAMS["full"])


def checkpoint_bytes(ctx: Context) -> int:
    model = ctx.phase.model
    return model_params(model.config, model.gca) * 4 * (1 + OPTIMIZER_COPIES)


def check_runs_writable(ctx: Context):
    root = _runs_root(ctx)
    target = root if root.exists() else _existing_ancestor(root)
    if not target.is_dir():
        return "fail", f"{short_path(target)} is not a directory", f"remove it or set run.root (--set run.root=PATH)"
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".bevctl-doctor-"):
            pass
    except OSError as exc:
        if exc.errno == errno.EROFS:
            fix = f"{target} is on a read-only mount: mount it read-write (docker: -v ...:{target}:rw) or set run.root"
        else:
            fix = f"fix its owner/permissions (sudo chown -R $USER {target}) or set run.root"
        return "fail", f"cannot write in {short_path(target)}: {exc.strerror}", fix
    if target != root:
        return "ok", f"{short_path(root)} will be created (in writable {short_path(target)})", None
    return "ok", f"{short_path(root)} is writable", None


def check_space(ctx: Context):
    root = _runs_root(ctx)
    free = shutil.disk_usage(_existing_ancestor(root)).free
    if ctx.phase is None:
        return "ok", f"{free / 2**30:.1f} GiB free at {short_path(root)}", None
    each = checkpoint_bytes(ctx)
    keep = ctx.phase.train.max_keep + 2  # kept epochs + latest.pth + the one being written
    need = each * keep
    line = (f"{free / 2**30:.1f} GiB free at {short_path(root)}; checkpoints ~{each / 2**30:.2f} GiB × {keep} "
            f"= {need / 2**30:.1f} GiB")
    if free < need:
        return "fail", line, "free space, lower train.max_keep, or set run.root to a bigger disk (--set run.root=PATH)"
    if free < 2 * need:
        return "warn", line + " (less than twice that is free)", "free space or set run.root to a bigger disk"
    return "ok", line, None
