"""`bevctl watch` ingest speed: 100k lines of our events.jsonl and of an mmcv text log, against `grep` over the
same file in the same run.

Goal: ingest + first snapshot <= 1 s per 100k lines. Measured twice: in process (Session.poll + snapshot, what a
live dashboard pays at start) and end to end (`bevctl watch FILE --json`, interpreter start-up included).
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bevctl import runs  # noqa: E402
from bevctl.watch.session import Session  # noqa: E402

LINES = 100_000
MAP_CLASSES = ("drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider")


def metrics(step: int) -> dict[str, float]:
    m = {"loss/object/loss_heatmap": 1.2 + 0.1 * math.sin(step), "loss/object/layer_-1_loss_cls": 0.3,
         "loss/object/layer_-1_loss_bbox": 0.8, "stats/object/matched_ious": 0.4}
    for cls in MAP_CLASSES:
        m[f"loss/map/{cls}/focal"] = 0.08
        m[f"loss/map/{cls}/dice"] = 0.5 - 1e-6 * step
    m["loss"] = sum(v for k, v in m.items() if k.startswith("loss/"))
    m["grad_norm"] = 25.0
    return m


def write_events(path: Path) -> None:
    t0 = time.time() - LINES
    with open(path, "w", encoding="utf-8") as f:
        import json

        for step in range(1, LINES + 1):
            epoch, it = divmod(step - 1, 3862)
            f.write(json.dumps({"schema": 1, "time": t0 + step, "kind": "train", "epoch": epoch + 1, "iter": it + 1,
                                "iters_per_epoch": 3862, "global_step": step, "lr": 2e-4, "step_time": 1.0,
                                "data_time": 0.1, "memory": 24562, **metrics(step)}) + "\n")


def write_mmcv(path: Path) -> None:
    t0 = time.time() - LINES
    with open(path, "w", encoding="utf-8") as f:
        for step in range(1, LINES + 1):
            epoch, it = divmod(step - 1, 3862)
            line = runs.format_train_line(epoch + 1, it + 1, 3862, 2e-4, 93784, 1.0, 0.1, 24562, metrics(step))
            f.write(f"{runs.log_timestamp(t0 + step)} - mmdet3d - INFO - {line}\n")


def median_time(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ingest(path: Path) -> None:
    session = Session(path)
    session.poll(force_scan=True)
    snap = session.snapshot()
    assert snap["metrics"]["loss"]["count"] == LINES, snap["metrics"]["loss"]["count"]
    session.close()


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"events.jsonl": Path(tmp) / "events.jsonl", "mmcv text": Path(tmp) / "20261125_091044.log"}
        write_events(files["events.jsonl"])
        write_mmcv(files["mmcv text"])
        bevctl = str(Path(sys.executable).parent / "bevctl")
        print(f"{'format':<14}{'MB':>6}{'grep':>9}{'ingest':>9}{'ratio':>8}{'cli --json':>12}{'ratio':>8}  goal <= 1 s")
        for label, path in files.items():
            grep = median_time(lambda: subprocess.run(["grep", "-c", "loss/map/divider", str(path)],
                                                      stdout=subprocess.DEVNULL, check=True))
            ours = median_time(lambda: ingest(path))
            cli = median_time(lambda: subprocess.run([bevctl, "watch", str(path), "--json"],
                                                     stdout=subprocess.DEVNULL, check=False), repeat=2)
            size = path.stat().st_size / 1e6
            print(f"{label:<14}{size:6.0f}{grep:8.3f}s{ours:8.3f}s{ours / grep:7.0f}x{cli:11.3f}s{cli / grep:7.0f}x"
                  f"  {'ok' if ours <= 1.0 else 'MISSED'}")
            results[f"{label}_grep_s"] = grep
            results[f"{label}_ingest_s"] = ours
            results[f"{label}_cli_s"] = cli
        # start-up: a small run (1000 lines) with --once, against `bevctl --help` (no command imports at all)
        small = Path(tmp) / "small"
        small.mkdir()
        lines = files["events.jsonl"].open().readlines()[:1000]
        (small / "events.jsonl").write_text("".join(lines))
        helps = median_time(lambda: subprocess.run([bevctl, "--help"], stdout=subprocess.DEVNULL, check=False), 5)
        once = median_time(lambda: subprocess.run([bevctl, "watch", str(small), "--once"], stdout=subprocess.DEVNULL,
                                                  check=False), 5)
        print(f"start-up: bevctl --help {helps:.3f}s, bevctl watch SMALL --once {once:.3f}s, ratio {once / helps:.2f}")
        results["help_s"], results["once_small_s"] = helps, once
    return results


if __name__ == "__main__":
    main()
