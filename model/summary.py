"""Per-module parameter table of a model config, built on the meta device (no memory, no weights).

    python -m model.summary --config full [--gca task] [--heads object,map] [--depth 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict

import model  # noqa: F401
from model.bevfusion import build_model
from model.config import GCA_MODES, HEADS, get_config
from model.manifest import GROUPS, group_of


def parameter_table(net, depth: int | None = None) -> "OrderedDict[str, dict]":
    """{module prefix: {"params": trainable, "frozen": non-trainable params, "buffers": buffer elements}}, by the
    manifest groups (or the first `depth` name components)."""
    rows: OrderedDict[str, dict] = OrderedDict()

    def key(name: str) -> str:
        if depth is not None:
            return ".".join(name.split(".")[:depth])
        return group_of(name)

    for name, p in net.named_parameters():
        r = rows.setdefault(key(name), {"params": 0, "frozen": 0, "buffers": 0})
        r["params" if p.requires_grad else "frozen"] += p.numel()
    for name, b in net.named_buffers():
        r = rows.setdefault(key(name), {"params": 0, "frozen": 0, "buffers": 0})
        r["buffers"] += b.numel()
    if depth is None:
        rows = OrderedDict(sorted(rows.items(), key=lambda kv: GROUPS.index(kv[0])))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.summary", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="full", help="full, tiny or a model-config YAML")
    ap.add_argument("--gca", default="task", choices=list(GCA_MODES))
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--depth", type=int, default=None, help="group by the first N name components instead")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = get_config(args.config, gca=args.gca, heads=tuple(h for h in args.heads.split(",") if h))
    net = build_model(cfg, device="meta")
    rows = parameter_table(net, args.depth)
    total = sum(r["params"] for r in rows.values())
    if args.json:
        print(json.dumps({"schema": 1, "config": cfg.name, "gca": args.gca, "modules": rows, "trainable": total,
                          "gca_params": net.gca_params()}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"BEVFusion `{cfg.name}`, GCA {args.gca}, heads {', '.join(cfg.heads)}")
    table.add_column("module")
    table.add_column("params", justify="right")
    table.add_column("%", justify="right")
    table.add_column("frozen / buffers", justify="right")
    for name, r in rows.items():
        extra = f"{r['frozen']:,} / {r['buffers']:,}" if r["frozen"] or r["buffers"] else ""
        table.add_row(name, f"{r['params']:,}", f"{100 * r['params'] / max(total, 1):.1f}", extra)
    table.add_row("total (trainable)", f"{total:,}", "100.0", "", style="bold")
    console = Console()
    console.print(table)
    gca = net.gca_params()
    if gca:
        console.print("GCA: " + ", ".join(f"[{k}] {v:,}" for k, v in gca.items()) + f"; total {sum(gca.values()):,}",
                      markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
