"""Knowledge about BEVFusion checkpoints: benign keys, module groups, spconv layouts, mmdet3d names, prefixes."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Iterable

from bevctl.errors import UsageError

# Keys that never decide compatibility: counters and buffers the model recomputes at construction.
IGNORE_RULES: list[tuple[str, str]] = [
    ("*.num_batches_tracked", "BatchNorm step counter"),
    ("*.relative_position_index", "Swin buffer recomputed from the window size"),
    ("*.attn_mask", "Swin buffer recomputed from the window size"),
    ("encoders.camera.vtransform.frustum", "view-transform geometry recomputed from the config"),
    ("encoders.camera.vtransform.dx", "view-transform geometry recomputed from the config"),
    ("encoders.camera.vtransform.bx", "view-transform geometry recomputed from the config"),
    ("encoders.camera.vtransform.nx", "view-transform geometry recomputed from the config"),
]

# How many dotted components name a report group, by root module: the one module-group mapping of keys (the key
# manifests, check-ckpt's report and the trainer's load report all call group_of).
GROUP_DEPTH = {"encoders": 3, "decoder": 2, "heads": 2, "task_gca": 2, "fuser": 1}
# The bundled model's groups, in report order (DEVELOPERS.md, "Key manifest").
GROUPS = ("encoders.camera.backbone", "encoders.camera.neck", "encoders.camera.vtransform", "encoders.lidar.backbone",
          "fuser", "decoder.backbone", "decoder.neck", "task_gca.object", "task_gca.map", "task_gca.shared",
          "heads.object", "heads.map")

# mmdet3d 1.x projects/BEVFusion module names -> the original's (checkpoint key prefixes).
MMDET3D_PREFIXES: list[tuple[str, str]] = [
    ("img_backbone.", "encoders.camera.backbone."),
    ("img_neck.", "encoders.camera.neck."),
    ("view_transform.", "encoders.camera.vtransform."),
    ("pts_middle_encoder.", "encoders.lidar.backbone."),
    ("fusion_layer.", "fuser."),
    ("pts_backbone.", "decoder.backbone."),
    ("pts_neck.", "decoder.neck."),
    ("bbox_head.", "heads.object."),
]
# Inside TransFusion's decoder layer mmdet3d uses mmdet's DETR layer names; only under heads.object.decoder.N
_DEC = r"^(heads\.object\.decoder\.\d+)\."
MMDET3D_LAYER_RENAMES: list[tuple[str, str]] = [
    (_DEC + r"self_attn\.attn\.", r"\1.self_attn."),
    (_DEC + r"cross_attn\.attn\.", r"\1.multihead_attn."),
    (_DEC + r"ffn\.layers\.0\.0\.", r"\1.linear1."),
    (_DEC + r"ffn\.layers\.1\.", r"\1.linear2."),
    (_DEC + r"norms\.0\.", r"\1.norm1."),
    (_DEC + r"norms\.1\.", r"\1.norm2."),
    (_DEC + r"norms\.2\.", r"\1.norm3."),
]


def group_of(key: str) -> str:
    parts = key.split(".")
    depth = GROUP_DEPTH.get(parts[0], 1)
    return ".".join(parts[: max(1, min(depth, len(parts) - 1))])


def ignore_reason(key: str) -> str | None:
    for pattern, reason in IGNORE_RULES:
        if fnmatchcase(key, pattern):
            return reason
    return None


def matches_any(key: str, globs: Iterable[str]) -> str | None:
    """The first glob covering `key`: an fnmatch pattern, or a module name covering its keys (`task_gca`)."""
    for glob in globs:
        if fnmatchcase(key, glob) or key.startswith(glob.rstrip(".*") + "."):
            return glob
    return None


# ------------------------------------------------------------------------------------------ remapping


def parse_remap(items: Iterable[str]) -> list[tuple[str, str]]:
    """`REGEX=REPL` strings (split at the first `=`) into compiled-checked pairs."""
    rules = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"--remap {item!r} is not REGEX=REPL", fix=r"write e.g. --remap '^backbone\.=encoders.camera.backbone.'")
        pattern, repl = item.split("=", 1)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"--remap {item!r}: bad regular expression: {exc}") from None
        rules.append((pattern, repl))
    return rules


def apply_remap(keys: Iterable[str], rules: list[tuple[str, str]]) -> dict[str, str]:
    """old key -> new key after applying every rule in order (re.sub)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for key in keys:
        new = key
        for pattern, repl in compiled:
            new = pattern.sub(repl, new)
        out[key] = new
    return out


def mmdet3d_rules() -> list[tuple[str, str]]:
    return [("^" + re.escape(old), new) for old, new in MMDET3D_PREFIXES] + list(MMDET3D_LAYER_RENAMES)


def looks_like_mmdet3d(keys: Iterable[str]) -> bool:
    keys = list(keys)
    prefixes = tuple(old for old, _ in MMDET3D_PREFIXES)
    hits = sum(k.startswith(prefixes) for k in keys)
    return bool(keys) and hits >= len(keys) / 2


def remap_arg(pattern: str, repl: str) -> str:
    return shell_quote(f"{pattern}={repl}")


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# ------------------------------------------------------------------------------------------ spconv layouts


def spconv_layout(ckpt_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> str | None:
    """Which sparse-conv weight conversion turns the checkpoint tensor into the model's, if any.

    spconv 1.x (and mmcv ops) store (kD, kH, kW, in, out); spconv 2.x stores (out, kD, kH, kW, in).
    """
    if len(ckpt_shape) != 5 or len(model_shape) != 5 or ckpt_shape == model_shape:
        return None
    if (ckpt_shape[4],) + ckpt_shape[:4] == model_shape:
        return "spconv1->spconv2"
    if ckpt_shape[1:] + (ckpt_shape[0],) == model_shape:
        return "spconv2->spconv1"
    return None


# Permutation the loader applies to the checkpoint tensor for each conversion.
SPCONV_PERMUTE = {"spconv1->spconv2": (4, 0, 1, 2, 3), "spconv2->spconv1": (1, 2, 3, 4, 0)}


# ------------------------------------------------------------------------------------------ suggestions


def suggest_prefix(
    ckpt: dict[str, tuple[int, ...]], model: dict[str, tuple[int, ...]], current_matches: int
) -> tuple[str, str, int] | None:
    """Find one (strip, add) prefix rewrite that makes clearly more checkpoint keys match the model by name and shape.

    Candidates: strip one or two leading components that most checkpoint keys share (or nothing), add any
    module prefix of the model (or nothing). Returns (regex, replacement, matches) or None.
    """
    if not ckpt:
        return None
    strips = {""}
    for depth in (1, 2):
        counts: dict[str, int] = {}
        for key in ckpt:
            parts = key.split(".")
            if len(parts) > depth:
                prefix = ".".join(parts[:depth]) + "."
                counts[prefix] = counts.get(prefix, 0) + 1
        strips.update(p for p, n in counts.items() if n >= len(ckpt) * 0.3)
    adds = {""}
    for key in model:
        parts = key.split(".")
        for depth in range(1, min(4, len(parts))):
            adds.add(".".join(parts[:depth]) + ".")
    best: tuple[str, str, int] | None = None
    for strip in strips:
        rest = {k[len(strip):]: s for k, s in ckpt.items() if k.startswith(strip)}
        for add in adds:
            if not strip and not add:
                continue
            n = sum(1 for k, s in rest.items() if model.get(add + k) == s)
            # on a tie prefer the rewrite that names the module on both sides (^backbone\.=encoders.camera.backbone.)
            if n and (best is None or (n, bool(strip), len(add)) > (best[2], bool(best[0]), len(best[1]))):
                best = (strip, add, n)
    if best is None or best[2] < max(1, current_matches) * 1.5 or best[2] < len(ckpt) * 0.5:
        return None
    strip, add, n = best
    return ("^" + re.escape(strip) if strip else "^", add, n)


def expect_missing_globs(missing: list[str], present: Iterable[str]) -> list[str]:
    """Few globs that cover every key in `missing` and none in `present`.

    Each glob is the widest module prefix (`task_gca.*`, `heads.object.decoder.0.norm3.*`) that covers no present
    key; a key whose every prefix is shared with a present key stays exact.
    """
    present = list(present)
    globs: list[str] = []
    for key in missing:
        if any(fnmatchcase(key, g) for g in globs):
            continue
        globs.append(_widest_safe_glob(key, present))
    return globs


def _widest_safe_glob(key: str, present: list[str]) -> str:
    parts = key.split(".")
    for depth in range(1, len(parts)):
        prefix = ".".join(parts[:depth]) + "."
        if not any(p.startswith(prefix) for p in present):
            return prefix + "*"
    return key
