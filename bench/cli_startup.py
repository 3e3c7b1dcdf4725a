"""`bevctl --help` cold start against a bare Typer app with the same command names, measured in the same run.

Goal: ratio <= 1.3 (heavy imports belong inside the commands that need them).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = ["build", "shell", "doctor", "check-ckpt", "start", "stop", "runs", "watch", "data"]
BARE = "import typer\napp = typer.Typer()\n" + "".join(
    f"@app.command({name!r})\ndef c{i}() -> None:\n    '''{name}'''\n\n" for i, name in enumerate(COMMANDS)
) + "app()\n"


def median_seconds(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeat: int = 15) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE)
        # Warm the page cache once for each, then interleave nothing: medians over `repeat` runs.
        for argv in ([sys.executable, str(bare), "--help"], [sys.executable, "-m", "bevctl", "--help"]):
            subprocess.run(argv, capture_output=True, check=False)
        empty = median_seconds([sys.executable, "-c", "pass"], repeat)
        bare_t = median_seconds([sys.executable, str(bare), "--help"], repeat)
        ours = median_seconds([sys.executable, "-m", "bevctl", "--help"], repeat)
    result = {"python_pass_s": empty, "bare_typer_help_s": bare_t, "bevctl_help_s": ours, "ratio": ours / bare_t}
    print(f"python -c pass      {empty * 1000:7.1f} ms")
    print(f"bare typer --help   {bare_t * 1000:7.1f} ms  ({bare_t / empty:.1f}x python -c pass)")
    print(f"bevctl --help       {ours * 1000:7.1f} ms")
    print(f"ratio bevctl / bare typer: {result['ratio']:.2f}  (goal <= 1.30)")
    return result


if __name__ == "__main__":
    main()
