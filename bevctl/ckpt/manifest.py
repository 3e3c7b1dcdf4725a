"""The model side of the comparison: a key manifest (name, shape, dtype, group, kind per state-dict entry).

Shipped manifests (`bevctl/manifests/<config>-<gca>.json`, written by `python -m model.manifest --write`) let a
host without torch check a checkpoint. With torch and the bundled `model` importable, a manifest can instead be
built live on the meta device (a model-config YAML, or `--live`).
"""

from __future__ import annotations

import math

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from bevctl.ckpt.rules import group_of
from bevctl.errors import UsageError

PACKAGED_CONFIGS = ("full", "tiny")


@dataclass(frozen=True)
class ModelKey:
    name: str
    shape: tuple[int, ...]
    dtype: str
    group: str
    kind: str  # "param" | "buffer"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Manifest:
    config: str
    gca: str
    heads: list[str]
    keys: dict[str, ModelKey]
    source: str  # "shipped <file>", "file <path>", "live (meta device)"
    model_version: str = ""
    groups: list[str] = field(default_factory=list)  # report order

    def only_heads(self, heads: Iterable[str]) -> "Manifest":
        """Drop heads (and their task GCA) the phase does not build."""
        heads = list(heads)
        dropped = {f"{root}.{h}" for h in self.heads if h not in heads for root in ("heads", "task_gca")}
        if not dropped:
            return self
        keys = {k: v for k, v in self.keys.items() if v.group not in dropped}
        return Manifest(self.config, self.gca, heads, keys, self.source, self.model_version,
                        [g for g in self.groups if g not in dropped])


def from_dict(data: dict[str, Any], source: str) -> Manifest:
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("keys"), list):
        raise UsageError(f"{source}: not a key manifest (schema 1)", fix="regenerate it with `python -m model.manifest --write`")
    keys: dict[str, ModelKey] = {}
    groups: list[str] = []
    for entry in data["keys"]:
        name = str(entry["name"])
        group = str(entry.get("group") or group_of(name))
        keys[name] = ModelKey(
            name=name,
            shape=tuple(int(s) for s in entry.get("shape", ())),
            dtype=str(entry.get("dtype", "float32")),
            group=group,
            kind=str(entry.get("kind", "param")),
        )
        if group not in groups:
            groups.append(group)
    return Manifest(
        config=str(data.get("config", "?")),
        gca=str(data.get("gca", "?")),
        heads=list(data.get("heads", ["object", "map"])),
        keys=keys,
        source=source,
        model_version=str(data.get("model_version", "")),
        groups=groups,
    )


def to_dict(manifest: Manifest) -> dict[str, Any]:
    return {
        "schema": 1,
        "config": manifest.config,
        "gca": manifest.gca,
        "heads": manifest.heads,
        "model_version": manifest.model_version,
        "keys": [
            {"name": k.name, "shape": list(k.shape), "dtype": k.dtype, "group": k.group, "kind": k.kind}
            for k in manifest.keys.values()
        ],
    }


def shipped_manifest_path(config: str, gca: str) -> Path | None:
    try:
        entry = resources.files("bevctl") / "manifests" / f"{config}-{gca}.json"
        return Path(str(entry)) if entry.is_file() else None
    except (FileNotFoundError, ModuleNotFoundError):
        return None


def load_manifest(config: str = "full", gca: str = "task", heads: Iterable[str] | None = None, live: bool = False) -> Manifest:
    """Resolve the model side: a manifest JSON path, a shipped manifest, or a live meta-device build."""
    path = Path(config).expanduser()
    if config.endswith(".json"):
        if not path.is_file():
            raise UsageError(f"manifest {config} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"manifest {config} is not readable JSON: {exc}") from None
        manifest = from_dict(data, f"file {config}")
    else:
        shipped = None if live or config not in PACKAGED_CONFIGS else shipped_manifest_path(config, gca)
        if shipped is not None:
            manifest = from_dict(json.loads(shipped.read_text(encoding="utf-8")), f"shipped {shipped.name}")
        else:
            manifest = live_manifest(config, gca, heads)
    return manifest.only_heads(heads) if heads is not None else manifest


def live_manifest(config: str, gca: str, heads: Iterable[str] | None = None) -> Manifest:
    """Build the bundled model on the meta device (no memory, no init) and describe its state dict."""
    try:
        import torch  # noqa: F401
        from model.bevfusion import build_model
        from model.config import get_config
    except ImportError as exc:
        where = f"bevctl/manifests/{config}-{gca}.json" if config in PACKAGED_CONFIGS else config
        raise UsageError(
            f"no key manifest for model config {config!r} (gca {gca}) and the model cannot be built here ({exc.name or exc} missing)",
            fix=f"generate {where} with `python -m model.manifest --write`, pass --model-config MANIFEST.json, "
            "or run where torch and the bundled model are installed",
        ) from None
    kwargs = {"heads": tuple(heads)} if heads is not None else {}
    try:
        cfg = get_config(config, gca=gca, **kwargs)
    except (ValueError, OSError) as exc:
        raise UsageError(f"model config {config!r}: {exc}", fix="use full, tiny, a model-config YAML or a manifest .json") from None
    module = build_model(cfg, device="meta")
    manifest = manifest_from_module(module, config=config, gca=gca, heads=list(heads or ("object", "map")))
    manifest.source = "live (meta device)"
    return manifest


def manifest_from_module(module: Any, config: str, gca: str, heads: list[str], model_version: str = "") -> Manifest:
    """Describe any torch module's state dict (params and persistent buffers) in manifest form."""
    params = {name for name, _ in module.named_parameters()}
    return manifest_from_state(module.state_dict(keep_vars=True), params, config, gca, heads, model_version)


def manifest_from_state(state: Any, params: set[str], config: str = "?", gca: str = "?", heads: Iterable[str] = (),
                        model_version: str = "") -> Manifest:
    """A state dict's keys (anything with `.shape` and `.dtype`) in manifest form; `params` names the parameters.
    The one place key manifests are built: shipped files (model/manifest.py), live builds and the trainer's load."""
    keys: dict[str, ModelKey] = {}
    groups: list[str] = []
    for name, tensor in state.items():
        group = group_of(name)
        keys[name] = ModelKey(
            name=name,
            shape=tuple(int(s) for s in tensor.shape),
            dtype=str(tensor.dtype).replace("torch.", ""),
            group=group,
            kind="param" if name in params else "buffer",
        )
        if group not in groups:
            groups.append(group)
    return Manifest(config, gca, list(heads), keys, "module", model_version, groups)
