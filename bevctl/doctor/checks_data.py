"""Dataset checks: the phase's data.root is a readable nuScenes tree (version tables, samples, sweeps,
maps/expansion for the map head). A synthetic phase whose root is still empty is fine: it is generated on start.

Tables are never parsed whole (sample_data.json of trainval is hundreds of MB): the first part of
sample_data.json is enough to spot-check that files named there exist.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bevctl.doctor.core import Context, short_path

TABLES = ["attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility"]
CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
LIDAR = "LIDAR_TOP"
SPOT_BYTES = 256 * 1024


def _root(ctx: Context) -> Path:
    return ctx.path(ctx.phase.data.root)


def _generated(ctx: Context) -> bool:
    """Synthetic phase whose root holds no dataset yet: the trainer generates it before training."""
    data = ctx.phase.data
    return data.synthetic and not (_root(ctx) / data.version).exists()


def _pre(ctx: Context):
    if ctx.phase is None:
        return "skipped", "no phase given (--phase P)"
    if ctx.runs_in == "container":
        # On the host the container's mount source is data.root; still worth checking when it exists here.
        if not _root(ctx).exists():
            return "skipped", f"{ctx.phase.data.root} is not on this host; check inside with --in-container"
    return None


def _missing_fix(ctx: Context) -> str:
    root = ctx.phase.data.root
    return (f"link your nuScenes folder there (ln -s /path/to/nuscenes {root}) or point the phase at it: "
            f"--set data.root=/path/to/nuscenes")


def check_root(ctx: Context):
    pre = _pre(ctx)
    if pre:
        return pre[0], pre[1], None
    data, root = ctx.phase.data, _root(ctx)
    if _generated(ctx):
        state = "is empty" if root.is_dir() else "does not exist yet"
        return "ok", f"synthetic data: {short_path(root)} {state}, it will be generated on `bevctl start`", None
    if not root.exists():
        hint = " (a dangling symlink)" if root.is_symlink() else ""
        return "fail", f"dataset root {short_path(root)} does not exist{hint}", _missing_fix(ctx)
    if not root.is_dir():
        return "fail", f"dataset root {short_path(root)} is not a directory", _missing_fix(ctx)
    if not os.access(root, os.R_OK | os.X_OK):
        return "fail", f"dataset root {short_path(root)} is not readable", f"chmod -R a+rX {root} (or fix the mount)"
    if not (root / data.version).is_dir():
        versions = sorted(p.name for p in root.glob("v1.0-*") if p.is_dir())
        found = f"; found {', '.join(versions)}" if versions else ""
        fix = f"--set data.version={versions[0]}" if versions else _missing_fix(ctx)
        return "fail", f"{short_path(root)} has no {data.version}/ folder{found}", fix
    kind = "synthetic nuScenes-format data" if data.synthetic else "nuScenes"
    return "ok", f"{kind} at {short_path(root)} ({data.version})", None


def check_tables(ctx: Context):
    pre = _pre(ctx)
    if pre:
        return pre[0], pre[1], None
    data, root = ctx.phase.data, _root(ctx)
    folder = root / data.version
    if _generated(ctx) or not folder.is_dir():
        return "skipped", "no tables yet (see data.root)", None
    missing = [t for t in TABLES if not (folder / f"{t}.json").is_file()]
    if missing:
        return ("fail", f"{short_path(folder)} lacks {len(missing)} of {len(TABLES)} tables: {', '.join(missing)}.json",
                "re-extract the nuScenes metadata archive (v1.0-*-meta.tgz) into the dataset root")
    empty = [t for t in ("scene", "sample", "sample_data") if (folder / f"{t}.json").stat().st_size < 2]
    if empty:
        return "fail", f"empty tables: {', '.join(empty)}.json", "re-extract the nuScenes metadata archive"
    try:
        scenes = json.loads((folder / "scene.json").read_text())
    except (OSError, ValueError) as exc:
        return "fail", f"scene.json is unreadable: {type(exc).__name__}: {exc}", "re-extract the nuScenes metadata archive"
    return "ok", f"{len(TABLES)} tables, {len(scenes)} scenes", None


def _spot_files(table: Path, limit: int = 20) -> list[str]:
    with open(table, "rb") as handle:
        head = handle.read(SPOT_BYTES).decode("utf-8", "replace")
    return re.findall(r'"filename"\s*:\s*"([^"]+)"', head)[:limit]


def check_sensors(ctx: Context):
    pre = _pre(ctx)
    if pre:
        return pre[0], pre[1], None
    data, root = ctx.phase.data, _root(ctx)
    if _generated(ctx) or not (root / data.version).is_dir():
        return "skipped", "no dataset yet (see data.root)", None
    wanted = [f"samples/{c}" for c in CAMERAS] + [f"samples/{LIDAR}"]
    if data.sweeps > 0:
        wanted.append(f"sweeps/{LIDAR}")
    missing = [w for w in wanted if not (root / w).is_dir()]
    if missing:
        fix = "extract the sensor blobs (v1.0-*_blobs.tgz) into the dataset root"
        if missing == [f"sweeps/{LIDAR}"]:
            fix += ", or train without sweeps: --set data.sweeps=0"
        return "fail", f"{short_path(root)} lacks {', '.join(m + '/' for m in missing)}", fix
    table = root / data.version / "sample_data.json"
    names = _spot_files(table) if table.is_file() else []
    absent = [n for n in names if not (root / n).is_file()]
    if absent:
        return ("fail", f"{len(absent)} of the first {len(names)} files in sample_data.json are missing, e.g. {absent[0]}",
                "the blobs do not match the tables: extract the blobs of the same nuScenes version")
    sample = next((p for p in (root / "samples" / LIDAR).iterdir() if p.is_file()), None)
    if sample is None:
        return "fail", f"{short_path(root / 'samples' / LIDAR)} is empty", "extract the sensor blobs into the dataset root"
    try:
        with open(sample, "rb") as handle:
            handle.read(16)
    except OSError as exc:
        return "fail", f"cannot read {short_path(sample)}: {exc.strerror}", f"chmod -R a+rX {root} (or fix the mount)"
    checked = f"; {len(names)} listed files present" if names else ""
    return "ok", f"samples/ ({len(CAMERAS)} cameras + {LIDAR}){' and sweeps/' if data.sweeps else ''} readable{checked}", None


def check_maps(ctx: Context):
    pre = _pre(ctx)
    if pre:
        return pre[0], pre[1], None
    data, root = ctx.phase.data, _root(ctx)
    if "map" not in ctx.phase.model.heads:
        return "skipped", "the phase has no map head", None
    if _generated(ctx) or not (root / data.version).is_dir():
        return "skipped", "no dataset yet (see data.root)", None
    expansion = root / "maps" / "expansion"
    fix = "extract the nuScenes map expansion (nuScenes-map-expansion-v1.3.zip) into maps/"
    if not expansion.is_dir():
        return "fail", f"{short_path(expansion)} does not exist (the map head needs it)", fix
    have = {p.stem for p in expansion.glob("*.json")}
    try:
        logs = json.loads((root / data.version / "log.json").read_text())
        used = sorted({entry["location"] for entry in logs})
    except (OSError, ValueError, KeyError, TypeError):
        used = []
    missing = [loc for loc in used if loc not in have]
    if missing or not have:
        return "fail", f"maps/expansion lacks {', '.join(missing) or 'every location'}.json", fix
    return "ok", f"maps/expansion has {len(have)} location(s){' incl. all used by log.json' if used else ''}", None


def check_infos(ctx: Context):
    pre = _pre(ctx)
    if pre:
        return pre[0], pre[1], None
    info = ctx.phase.data.info_pkl
    if not info:
        return "skipped", "no data.info_pkl (infos are built from the tables)", None
    path = ctx.path(info)
    if not path.is_file():
        return "fail", f"data.info_pkl {short_path(path)} not found", "drop data.info_pkl, or generate it with the original create_data.py"
    return "ok", f"{short_path(path)} ({path.stat().st_size / 2**20:.1f} MiB)", None
