"""Which bundled model a checkpoint was trained with: from its metadata, else from its tensor shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bevctl.ckpt import rules
from bevctl.ckpt.manifest import PACKAGED_CONFIGS, Manifest, load_manifest
from bevctl.ckpt.types import TensorInfo

GCA_MODES = ("none", "shared", "task")
HEADS = ("object", "map")


@dataclass
class Inferred:
    config: str
    gca: str
    heads: list[str]
    how: str  # "metadata" | "shapes"
    score: float = 1.0  # share of the checkpoint's tensors that fit the inferred model by name and shape

    def describe(self) -> str:
        return f"{self.config}, gca {self.gca}, heads {'+'.join(self.heads)}"


def _fits(tensors: Mapping[str, TensorInfo], manifest: Manifest) -> int:
    n = 0
    for key, info in tensors.items():
        spec = manifest.keys.get(key)
        if spec is not None and (info.shape == spec.shape or rules.spconv_layout(info.shape, spec.shape)):
            n += 1
    return n


def infer_model(tensors: Mapping[str, TensorInfo], meta: Mapping[str, Any]) -> Inferred | None:
    """The packaged config, GCA mode and heads that fit the checkpoint; None when nothing fits at all."""
    keys = list(tensors)
    if rules.looks_like_mmdet3d(keys):
        renamed = rules.apply_remap(keys, rules.mmdet3d_rules())
        tensors = {renamed[k]: v for k, v in tensors.items()}
    heads = [h for h in HEADS if any(k.startswith(f"heads.{h}.") for k in tensors)] or list(HEADS)
    config, gca = meta.get("model_config"), meta.get("gca")
    saved_heads = meta.get("heads")
    if isinstance(saved_heads, (list, tuple)) and saved_heads and all(h in HEADS for h in saved_heads):
        heads = list(saved_heads)
    if config in PACKAGED_CONFIGS and gca in GCA_MODES:
        return Inferred(str(config), str(gca), heads, "metadata")
    if gca not in GCA_MODES:
        gca = ("task" if any(k.startswith(("task_gca.object.", "task_gca.map.")) for k in tensors)
               else "shared" if any(k.startswith("task_gca.shared.") for k in tensors) else "none")
    best: Inferred | None = None
    for name in ([config] if config in PACKAGED_CONFIGS else PACKAGED_CONFIGS):
        manifest = load_manifest(name, gca, heads=heads)
        score = _fits(tensors, manifest) / max(1, len(tensors))
        if best is None or score > best.score:
            best = Inferred(name, gca, heads, "shapes", score)
    return best if best is not None and best.score > 0 else None
