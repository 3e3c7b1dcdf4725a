"""The live `bevctl watch` in a pseudo-terminal: latency from an appended line to the screen showing it, and CPU
used while nothing happens; `tail -F` on the same file, in the same run, is the baseline.

Goals: latency <= 0.5 s (file events and --poll), idle CPU <= 1 %, with 100k lines of history loaded.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEVCTL = str(Path(sys.executable).parent / "bevctl")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TICK = os.sysconf("SC_CLK_TCK")
BACKLOG = 100_000


class Terminal:
    """A command on a pty of 50x120, its output drained by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        full_env.update(TERM="xterm-256color", **(env or {}))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=full_env, cwd=ROOT,
                                     start_new_session=True)
        os.close(slave)
        self.buffer = ""
        self.lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if ready:
                    chunk = os.read(self.master, 65536)
                    if not chunk:
                        return
                    with self.lock:
                        self.buffer = (self.buffer + chunk.decode("utf-8", "replace"))[-200_000:]
            except (OSError, ValueError):
                return

    def wait_for(self, needle: str, seconds: float) -> float | None:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            with self.lock:
                if needle in ANSI.sub("", self.buffer):
                    return time.perf_counter() - start
            time.sleep(0.002)
        return None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


def event(i: int, loss: float) -> str:
    return json.dumps({"schema": 1, "time": time.time(), "kind": "train", "epoch": 1, "iter": i,
                       "iters_per_epoch": 100000, "global_step": i, "lr": 1e-3, "step_time": 0.5, "data_time": 0.05,
                       "memory": 100, "loss": loss, "grad_norm": 1.0}) + "\n"


def append(path: Path, text: str) -> float:
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        return time.perf_counter()


def latencies(term: Terminal, events: Path, start: int, samples: int, marker) -> list[float]:
    out = []
    for k in range(samples):
        value = marker(k)
        t0 = append(events, event(start + k, value))
        seen = term.wait_for(f"last {value:.4g} ", 5.0)
        out.append(seen if seen is not None else float("inf"))
        time.sleep(0.3 + 0.05 * (k % 4))  # not in step with the redraw clock
    return out


def main(samples: int = 12, idle_s: float = 10.0) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "runs" / "bench-run"
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"schema": 1, "name": "bench-run", "phase": "demo", "config": {},
                                                  "status": "running", "started_at": time.time()}))
        events = run / "events.jsonl"
        # a long run's worth of history: 100k logged steps, so redraw costs are those of a real run
        events.write_text("".join(event(i, 3.0 - i * 1e-5) for i in range(1, BACKLOG + 1)))

        # baseline: tail -F shows an appended line after ...
        tail = Terminal(["tail", "-F", "-n", "0", str(events)])
        time.sleep(0.5)
        base = []
        for k in range(samples):
            t0 = append(events, event(BACKLOG + 10_000 + k, 0.0).replace('"loss": 0.0', f'"loss": 0.0, "mark": {k}'))
            seen = tail.wait_for(f'"mark": {k}', 5.0)
            base.append(seen if seen is not None else float("inf"))
            time.sleep(0.1)
        tail_cpu0 = tail.cpu_seconds()
        time.sleep(idle_s)
        tail_idle = (tail.cpu_seconds() - tail_cpu0) / idle_s
        tail.close()

        print(f"{'':<28}{'median':>10}{'p95':>10}{'ratio':>9}   goal")
        base_med = statistics.median(base)
        print(f"{'tail -F latency':<28}{base_med * 1000:9.1f}ms{sorted(base)[-1] * 1000:9.1f}ms{1:8.0f}x")
        for label, extra in (("watch latency (events)", []), ("watch latency (--poll)", ["--poll"])):
            term = Terminal([BEVCTL, "watch", str(run), *extra])
            assert term.wait_for("losses finite", 30) is not None, ANSI.sub("", term.buffer)[-2000:]
            time.sleep(1.0)
            offset = BACKLOG + (20_000 if not extra else 30_000)
            lat = latencies(term, events, offset, samples, lambda k, o=offset: (o - BACKLOG) / 10 + k)  # unique at 4 digits
            med, p95 = statistics.median(lat), sorted(lat)[int(0.95 * (len(lat) - 1))]
            print(f"{label:<28}{med * 1000:9.1f}ms{p95 * 1000:9.1f}ms{med / base_med:8.0f}x   <= 500 ms "
                  f"{'ok' if p95 <= 0.5 else 'MISSED'}")
            results[label] = med
            if not extra:
                time.sleep(1.0)
                cpu0 = term.cpu_seconds()
                time.sleep(idle_s)
                idle = (term.cpu_seconds() - cpu0) / idle_s
                results["idle_cpu"] = idle
            else:
                cpu0 = term.cpu_seconds()
                time.sleep(idle_s)
                results["idle_cpu_poll"] = (term.cpu_seconds() - cpu0) / idle_s
            term.close()
        print(f"{'tail -F idle CPU':<28}{tail_idle * 100:9.2f}%")
        print(f"{'watch idle CPU (events)':<28}{results['idle_cpu'] * 100:9.2f}%{'':>10}{'':>9}   <= 1 % "
              f"{'ok' if results['idle_cpu'] <= 0.01 else 'MISSED'}")
        print(f"{'watch idle CPU (--poll)':<28}{results['idle_cpu_poll'] * 100:9.2f}%{'':>10}{'':>9}   <= 1 % "
              f"{'ok' if results['idle_cpu_poll'] <= 0.01 else 'MISSED'}")
    return results


if __name__ == "__main__":
    main()
