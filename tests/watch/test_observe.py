"""TensorBoard and W&B mirrors (`bevctl.observe`) and `bevctl tb`: the same records as events.jsonl, read back
with the tools' own readers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, run_cli


def _events(n: int = 5) -> list[dict]:
    out = [{"schema": 1, "time": 1000.0 + s, "kind": "train", "epoch": 1, "iter": s, "iters_per_epoch": n,
            "global_step": s, "lr": 1e-3, "step_time": 0.5, "loss": 10.0 / s, "loss/map/divider/dice": 0.5}
           for s in range(1, n + 1)]
    out.append({"schema": 1, "time": 2000.0, "kind": "val", "epoch": 1, "object/map": 0.25})
    return out


def test_tensorboard_files_read_back_with_event_accumulator(tmp_path):
    pytest.importorskip("tensorboard")
    np = pytest.importorskip("numpy")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bevctl.observe import open_mirrors
    from bevctl.observe.images import bev_maps_image

    mirrors = open_mirrors(tmp_path / "run", {}, wandb=False)
    assert mirrors.names == ["TensorBoard"]
    for event in _events():
        mirrors.record(event)
    masks = np.zeros((6, 20, 30), dtype=np.float32)
    masks[0, :10] = 0.9  # drivable area in the first half of x
    mirrors.image("val/bev_map", bev_maps_image(masks, masks))
    mirrors.close()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("loss")] == [(s, round(10.0 / s, 4)) for s in range(1, 6)]
    assert {"lr", "step_time", "loss/map/divider/dice", "object/map"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("object/map")] == [5]  # validation at the newest global step
    image = acc.Images("val/bev_map")[0]
    assert (image.height, image.width, image.step) == (120, 180 + 4 + 180, 5)  # enlarged 6x, cell by cell
    from PIL import Image
    import io

    decoded = Image.open(io.BytesIO(image.encoded_image_string))
    assert decoded.size == (364, 120) and decoded.mode == "RGB"
    # forward (x) is up: the drivable first half of x is the bottom half of the picture
    assert decoded.getpixel((50, 90)) == (166, 206, 227) and decoded.getpixel((50, 30)) == (24, 24, 24)


def test_a_failing_mirror_is_switched_off_with_one_warning():
    from bevctl.observe import Mirrors

    class Broken:
        name = "Broken"
        closed = False

        def scalars(self, *args):
            raise OSError("disk full")

        def close(self):
            Broken.closed = True

    warnings: list[str] = []
    mirrors = Mirrors([Broken()], warnings.append)
    for event in _events():
        mirrors.record(event)  # never raises: training goes on
    assert warnings == ["Broken mirror switched off: OSError: disk full"] and Broken.closed and not mirrors.targets


def test_wandb_offline_run_gets_the_same_records(tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (optional); the mirror is skipped without it")
    code = """
import json, sys
from pathlib import Path
from bevctl.observe import open_mirrors
events = json.loads(sys.argv[2])
mirrors = open_mirrors(Path(sys.argv[1]), {"name": "demo"})
wb = [t for t in mirrors.targets if t.name == "W&B"][0]
for event in events:
    mirrors.record(event)
summary = {"loss": wb._run.summary["loss"]}  # the validation row is committed with the next step or at finish
mirrors.close()
print(json.dumps({"summary": summary}))
"""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_PROJECT": "bevctl-test"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), json.dumps(_events())], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    # W&B commits a step when a later one arrives (or at finish): the summary holds step 4's or step 5's loss
    assert data["summary"]["loss"] in (pytest.approx(2.5), pytest.approx(2.0))
    files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files, "no offline W&B run written"
    raw = files[0].read_bytes()
    assert b"loss/map/divider/dice" in raw and b"object/map" in raw  # the records went into the run file


def test_tb_command_without_tensorboard_and_with_a_bad_run(tmp_path):
    (tmp_path / "runs" / "r1" / "tb").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "run.json").write_text("{}")
    dry = run_cli("tb", "r1", "--runs-root", str(tmp_path / "runs"), "--dry-run", "--port", "6123")
    assert dry.returncode == 0, dry.stderr
    assert "tensorboard.main --port 6123" in dry.stdout and f"r1:{tmp_path / 'runs' / 'r1' / 'tb'}" in dry.stdout
    bad = run_cli("tb", "r2", "--runs-root", str(tmp_path / "runs"))
    assert bad.returncode == 2 and "no run named 'r2'" in bad.stderr and "Traceback" not in bad.stderr
    code = ("import sys\nsys.modules['tensorboard'] = None\nfrom bevctl.cli import main\n"
            f"main(['tb', '--runs-root', {str(tmp_path / 'runs')!r}])\n")
    missing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    assert missing.returncode == 3 and "pip install tensorboard" in missing.stderr
    assert missing.stderr.count("\n") <= 2 and "Traceback" not in missing.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tb_serves_the_runs(tmp_path):
    pytest.importorskip("tensorboard")
    from bevctl.observe import open_mirrors

    mirrors = open_mirrors(tmp_path / "runs" / "demo-run", {}, wandb=False)
    for event in _events():
        mirrors.record(event)
    mirrors.close()
    port = _free_port()
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "bevctl"), "tb", "--runs-root", str(tmp_path / "runs"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, tags = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=2) as r:
                    tags = json.loads(r.read())
                if tags:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert "demo-run/tb" in tags and "loss" in tags["demo-run/tb"], tags
    finally:
        server.terminate()
        server.wait(10)
