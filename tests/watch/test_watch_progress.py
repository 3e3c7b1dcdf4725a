"""`bevctl start --wait` shows what `bevctl watch` shows: `bevctl.watch.progress.wait_for_run` on a run being
written by another process."""

from __future__ import annotations

import re
import subprocess
import sys

from bevctl import runs
from tests.conftest import ROOT


def test_wait_shows_progress_eta_and_loss_then_the_end(tmp_path):
    run = tmp_path / "runs" / "demo-x"
    run.mkdir(parents=True)
    runs.write_manifest(run, runs.new_manifest("demo-x", "demo", {"train": {"epochs": 2}}, status="running"))
    events = runs.EventWriter(run / runs.EVENTS)
    events.emit("run_start", phase="demo", world_size=1, epochs=2, iters_per_epoch=3, start_epoch=1, start_iter=0)
    waiter = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from bevctl.watch.wait import wait_for_run;"
                               f"sys.exit(wait_for_run(Path({str(run)!r}), poll=0.05, quiet_s=0))"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"NO_COLOR": "1", "COLUMNS": "120",
                                                                                  "PATH": "/usr/bin:/bin"})
    step, lines = 0, []
    for epoch in (1, 2):
        for it in (1, 2, 3):
            step += 1
            events.emit("train", epoch=epoch, iter=it, iters_per_epoch=3, global_step=step, lr=1e-3, step_time=2.0,
                        loss=5.0 - step)
            while True:  # the waiter prints every poll (quiet_s=0): read until it has seen this step
                line = waiter.stderr.readline()
                lines.append(line)
                if not line or f"epoch {epoch}/2 iter {it}/3" in line:
                    break
    events.emit("run_end", status="failed", exit_code=3, message="data root vanished at epoch 2")
    events.close()
    runs.update_manifest(run, status="failed", exit_code=3)
    out, rest = waiter.communicate(timeout=60)
    err = "".join(lines) + rest
    assert waiter.returncode == 3, err
    # ETA from the median step time (2 s) and the steps left: epoch 1 iter 3 has 3 left, 0:00:06
    seen = re.findall(r"epoch (\d)/2 iter (\d)/3 \[[#.]{30}\] +\d+%  ETA 0:00:(\d\d)  loss (-?\d+)", err)
    assert len(set(seen)) == 6, err  # every step shown
    assert all(int(eta) == 2 * (6 - ((int(e) - 1) * 3 + int(i))) and int(loss) == 5 - ((int(e) - 1) * 3 + int(i))
               for e, i, eta, loss in seen), seen
    assert "epoch 2/2 iter 3/3 [##############################] 100%  failed  loss -1" in err
    assert "run demo-x failed (exit code 3)" in err and "data root vanished at epoch 2" in err
    assert "Traceback" not in err
