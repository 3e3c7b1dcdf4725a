"""Run every benchmark in bench/ in one process each; each prints its ratios against a baseline from the same run.

Absolute goals (watch ingest <= 1 s) depend on the machine: the yardstick line printed first (interpreter speed,
memory copy rate, load) says how this machine compares with the one the README's figures come from.
"""

import os
import subprocess
import sys
import time
from pathlib import Path


def yardstick() -> str:
    t = time.perf_counter()
    total = 0
    for i in range(10 ** 7):
        total += i
    python_s = time.perf_counter() - t
    block = bytearray(256 << 20)
    t = time.perf_counter()
    bytes(block)
    copy_gbs = 0.25 / (time.perf_counter() - t)
    return (f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; 10^7 Python additions "
            f"{python_s:.2f} s; memory copy {copy_gbs:.1f} GiB/s")


here = Path(__file__).resolve().parent
print(yardstick(), flush=True)
failed = 0
for script in sorted(here.glob("*.py")):
    if script.name in ("run_all.py",) or script.name.startswith("_"):
        continue
    print(f"\n=== {script.name}", flush=True)
    failed += subprocess.run([sys.executable, str(script)], cwd=here.parent).returncode != 0
sys.exit(1 if failed else 0)
