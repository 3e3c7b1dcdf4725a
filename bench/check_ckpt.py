"""`bevctl check-ckpt` against the naive check, on a full-size checkpoint, in the same run.

The checkpoint: the `full` model without GCA (phase 3) with AdamW state, as the trainer saves it (~0.55 GB);
it is checked against the task-GCA model (phase 4a), the seed's case. Built from the bundled `model` when it
imports, else from the shipped `full-task` key manifest (same names and shapes, random values).

naive:  python -c "import torch; torch.load(...); build the model; load_state_dict(strict=False)"
ours:   bevctl check-ckpt FILE --model-config full --gca task --expect-missing 'task_gca.*'

Goals: wall time ratio naive/ours >= 20; ours peak RSS <= 10% of the file size.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Runs one command and reports its wall time and peak RSS (children only: the wrapper itself is not counted).
MEASURE = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
wall = time.perf_counter() - t
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024}))
"""

NAIVE_MODEL = r"""
import sys, torch
from model.bevfusion import build_model
from model.config import get_config
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
model = build_model(get_config("full", "task"))
result = model.load_state_dict(ckpt["state_dict"], strict=False)
print(len(result.missing_keys), len(result.unexpected_keys))
"""

NAIVE_MANIFEST = r"""
import json, sys, torch
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
model = torch.nn.Module()
for entry in json.load(open(sys.argv[2]))["keys"]:
    owner = model
    *path, leaf = entry["name"].split(".")
    for part in path:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    tensor = torch.empty(entry["shape"])
    if entry["kind"] == "param":
        owner.register_parameter(leaf, torch.nn.Parameter(tensor))
    else:
        owner.register_buffer(leaf, tensor)
result = model.load_state_dict(ckpt["state_dict"], strict=False)
print(len(result.missing_keys), len(result.unexpected_keys))
"""


def build_checkpoint(folder: Path) -> tuple[Path, Path, str, list[str]]:
    """(checkpoint, task manifest JSON, where the weights came from, naive command)."""
    import torch

    from bevctl.ckpt.manifest import load_manifest, manifest_from_module, shipped_manifest_path, to_dict

    ckpt = folder / "epoch_5.pth"
    manifest_path = folder / "full-task.json"
    try:
        from model.bevfusion import build_model
        from model.config import get_config
    except ImportError:
        build_model = None
    if build_model is not None:
        torch.manual_seed(0)
        model = build_model(get_config("full", "none"))
        task = build_model(get_config("full", "task"), device="meta")
        manifest_path.write_text(json.dumps(to_dict(manifest_from_module(task, "full", "task", ["object", "map"]))))
        source = "bundled model (full, gca none)"
        naive = [sys.executable, "-c", NAIVE_MODEL, str(ckpt)]
    else:
        shipped = shipped_manifest_path("full", "task")
        if shipped is None:
            sys.exit("bench/check_ckpt.py needs the bundled model or bevctl/manifests/full-task.json")
        manifest_path.write_text(shipped.read_text())
        spec = load_manifest(str(manifest_path))
        model = torch.nn.Module()
        state = {k.name: torch.randn(k.shape) if k.dtype.startswith("float") else torch.zeros(k.shape, dtype=torch.long)
                 for k in spec.keys.values() if not k.group.startswith("task_gca")}
        model = _module_from_state(state)
        source = "shapes from bevctl/manifests/full-task.json (task_gca removed)"
        naive = [sys.executable, "-c", NAIVE_MANIFEST, str(ckpt), str(manifest_path)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.save({"meta": {"epoch": 5, "iter": 5 * 3862, "torch_version": str(torch.__version__), "gca": "none"},
                "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}, ckpt)
    return ckpt, manifest_path, source, naive


def _module_from_state(state: dict):
    import torch

    root = torch.nn.Module()
    for name, tensor in state.items():
        owner = root
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        if tensor.is_floating_point():
            owner.register_parameter(leaf, torch.nn.Parameter(tensor))
        else:
            owner.register_buffer(leaf, tensor)
    return root


def measure(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "NO_COLOR": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(repeat: int = 5) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        t = time.perf_counter()
        ckpt, manifest, source, naive = build_checkpoint(Path(tmp))
        size = ckpt.stat().st_size
        print(f"checkpoint: {size / 2**20:.0f} MiB from {source}, built in {time.perf_counter() - t:.0f} s")
        ours = [str(Path(sys.executable).parent / "bevctl"), "check-ckpt", str(ckpt), "--model-config", str(manifest),
                "--expect-missing", "task_gca.*"]
        subprocess.run(["cat", str(ckpt)], stdout=subprocess.DEVNULL, check=True)  # same warm page cache for both
        # interleaved, so a busy machine slows both alike
        ours_runs, naive_runs = [], []
        for i in range(repeat):
            ours_runs.append(measure(ours))
            if i < max(1, repeat - 1):
                naive_runs.append(measure(naive))
    for name, runs in (("ours", ours_runs), ("naive", naive_runs)):
        if any(r["rc"] != 0 for r in runs):
            sys.exit(f"{name} failed: {runs}")
    ours_wall = statistics.median(r["wall"] for r in ours_runs)
    naive_wall = statistics.median(r["wall"] for r in naive_runs)
    ours_cpu = statistics.median(r["cpu"] for r in ours_runs)
    naive_cpu = statistics.median(r["cpu"] for r in naive_runs)
    ours_rss = max(r["rss"] for r in ours_runs)
    naive_rss = max(r["rss"] for r in naive_runs)
    result = {
        "file_bytes": size, "ours_wall_s": ours_wall, "naive_wall_s": naive_wall, "speedup": naive_wall / ours_wall,
        "ours_cpu_s": ours_cpu, "naive_cpu_s": naive_cpu, "cpu_ratio": naive_cpu / ours_cpu,
        "ours_rss_bytes": ours_rss, "naive_rss_bytes": naive_rss, "ours_rss_fraction_of_file": ours_rss / size,
    }
    print(f"naive (torch.load + build + load_state_dict)  {naive_wall:6.2f} s wall  {naive_cpu:6.2f} s cpu  "
          f"peak RSS {naive_rss / 2**20:6.0f} MiB")
    print(f"bevctl check-ckpt                             {ours_wall:6.2f} s wall  {ours_cpu:6.2f} s cpu  "
          f"peak RSS {ours_rss / 2**20:6.0f} MiB")
    print(f"speedup naive/ours: {result['speedup']:.1f}x wall (goal >= 20), {result['cpu_ratio']:.1f}x cpu")
    print(f"ours peak RSS / file size: {100 * result['ours_rss_fraction_of_file']:.1f}%  (goal <= 10%)")
    return result


if __name__ == "__main__":
    main()
