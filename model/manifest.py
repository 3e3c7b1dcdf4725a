"""Key manifests: every state_dict key of each packaged config x GCA mode, for torch-free checkpoint checks.

    python -m model.manifest --write     # (re)writes bevctl/manifests/<config>-<gca>.json
    python -m model.manifest --check     # exit 1 when a shipped manifest differs from the code

Format (DEVELOPERS.md): {"schema": 1, "config", "gca", "heads", "model_version", "keys": [{"name", "shape", "dtype",
"group", "kind"}]}. Shapes are this model's: sparse-conv kernels in spconv 2 layout (out, k0, k1, k2, in); an
original (spconv 1.x) checkpoint holds them as (k0, k1, k2, in, out) -- see `sparse_conv_layout`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import model  # noqa: F401
from bevctl.ckpt.manifest import manifest_from_module, to_dict
from bevctl.ckpt.rules import GROUPS, group_of  # noqa: F401 - the one group mapping, re-exported for model.summary
from model.bevfusion import build_model
from model.config import GCA_MODES, MODEL_VERSION, get_config

CONFIGS = ("full", "tiny")
MANIFEST_DIR = Path(__file__).resolve().parents[1] / "bevctl" / "manifests"


def build_manifest(config: str, gca: str) -> dict:
    """The shipped manifest's content, described by bevctl.ckpt.manifest (the one manifest builder)."""
    cfg = get_config(config, gca=gca)
    net = build_model(cfg, device="meta")
    data = to_dict(manifest_from_module(net, config, gca, list(cfg.heads), MODEL_VERSION))
    keys = data.pop("keys")
    data["sparse_conv_layout"] = {"ours": "out,k0,k1,k2,in (spconv 2)", "original": "k0,k1,k2,in,out (spconv 1.x)"}
    data["keys"] = keys
    return data


def render(manifest: dict) -> str:
    # one key per line: diffs of a shipped manifest stay readable
    head = {k: v for k, v in manifest.items() if k != "keys"}
    lines = [json.dumps(k, separators=(", ", ": ")) for k in manifest["keys"]]
    body = json.dumps(head, indent=1)[:-2] + ',\n "keys": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    return body


def path_for(config: str, gca: str) -> Path:
    return MANIFEST_DIR / f"{config}-{gca}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.manifest", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the manifests")
    ap.add_argument("--check", action="store_true", help="compare with the shipped manifests")
    args = ap.parse_args(argv)
    stale = []
    for config in CONFIGS:
        for gca in GCA_MODES:
            text = render(build_manifest(config, gca))
            p = path_for(config, gca)
            if args.write:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
                print(f"wrote {p} ({len(json.loads(text)['keys'])} keys)", file=sys.stderr)
            elif not p.is_file() or p.read_text() != text:
                stale.append(str(p))
    if stale:
        print("stale manifests (run `python -m model.manifest --write`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
