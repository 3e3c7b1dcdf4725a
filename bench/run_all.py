"""Run every benchmark in bench/ in one process each; each prints its ratios against a baseline from the same run."""

import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
failed = 0
for script in sorted(here.glob("*.py")):
    if script.name in ("run_all.py",) or script.name.startswith("_"):
        continue
    print(f"\n=== {script.name}", flush=True)
    failed += subprocess.run([sys.executable, str(script)], cwd=here.parent).returncode != 0
sys.exit(1 if failed else 0)
