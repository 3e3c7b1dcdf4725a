"""`bevctl watch --once/--json` on our runs and on mmcv/mmengine logs, plus the pieces it is made of."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from bevctl import runs
from bevctl.watch.state import RunState, debiased_ema, matches
from tests.conftest import ROOT, run_cli
from tests.helpers.watch_fixtures import (
    MMCV_JSON,
    MMCV_TEXT,
    MMENGINE_SCALARS,
    MMENGINE_TEXT,
    phase_config,
    train_event_line,
    write_json_lines,
    write_run,
)


def snapshot(*args: str, code: int | None = 0) -> dict:
    result = run_cli("watch", *args, "--json")
    if code is not None:
        assert result.returncode == code, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == 1
    return data["runs"][0]


def rows(snap: dict) -> dict[str, dict]:
    return {row["check"]: row for row in snap["verification"]}


# --------------------------------------------------------------------------------------------- our runs


def test_once_on_a_run_written_through_the_run_contract(tmp_path):
    run = write_run(tmp_path / "runs" / "phase4a_stage1_task_gca")
    result = run_cli("watch", "--runs-root", str(tmp_path / "runs"), "--once")  # no RUN: the newest run
    assert result.returncode == 0, result.stderr
    screen = result.stdout
    for text in ("phase4a_stage1_task_gca", "loss/map/divider/dice", "task-specific GCA", "object 131,072",
                 "total 262,144", "epoch_5.pth", "all expected", "on track", "mAP 0.6000", "drivable_area"):
        assert text in screen, text
    assert "✗" not in screen
    snap = snapshot(str(run))
    assert snap["run"]["status"] == "finished" and snap["ok"] is True
    assert snap["progress"]["epoch"] == 6 and snap["progress"]["iters_per_epoch"] == 10
    assert snap["progress"]["it_per_s"] == pytest.approx(2.0)
    assert snap["progress"]["data_time_ratio"] == pytest.approx(0.1)
    assert list(snap["metrics"])[:2] == ["loss", "loss/map/divider/dice"]  # `loss` + the phase's band metrics
    assert "object/map" in snap["metrics"] and snap["metrics"]["object/map"]["source"] == "val"
    dice = snap["metrics"]["loss/map/divider/dice"]
    assert dice["count"] == 60 and dice["epoch_mean"] == pytest.approx(0.53 - 0.024)
    checks = rows(snap)
    assert checks["band loss/map/divider/dice"]["status"] == "ok"
    assert checks["band loss/map/divider/dice"]["expected"] == pytest.approx(0.525 - 0.025 / 5)
    assert checks["band object/map"]["status"] == "pending"
    assert snap["ingest"]["garbage"] == 0 and snap["ingest"]["lines"] > 60


def test_nan_loss_alerts_and_exits_1(tmp_path):
    run = write_run(tmp_path / "r", nan_at=33)
    result = run_cli("watch", str(run), "--once")
    assert result.returncode == 1
    assert "✗" in result.stdout and "nonfinite_loss" in result.stdout
    snap = snapshot(str(run), code=1)
    assert rows(snap)["losses finite"]["status"] == "fail"
    assert any(a["kind"] == "nonfinite_loss" and a["level"] == "error" for a in snap["alerts"])
    json.dumps(snap, allow_nan=False)  # strict JSON: NaN became null


def test_failed_expectation_band_exits_1(tmp_path):
    run = write_run(tmp_path / "r", epochs=7, dice=lambda e, i: 0.60)  # divider Dice stuck above the band
    result = run_cli("watch", str(run), "--once")
    assert result.returncode == 1
    assert "off track" in result.stdout
    row = rows(snapshot(str(run), code=1))["band loss/map/divider/dice"]
    assert row["status"] == "fail" and row["epoch"] == 7 and row["value"] == pytest.approx(0.60)


def test_score_band_wants_at_least_expected_minus_tolerance(tmp_path):
    run = write_run(tmp_path / "r", epochs=16, iters=2, dice=lambda e, i: 0.40)
    row = rows(snapshot(str(run), code=1))["band object/map"]  # val mAP 0.60 < 0.684 - 0.02
    assert row["status"] == "fail" and row["epoch"] == 16


def test_wrong_gca_counts_and_surprising_missing_keys_fail(tmp_path):
    run = write_run(tmp_path / "r", gca_params={"object": 131072, "map": 65536},
                    missing=["task_gca.object.w", "heads.map.classifier.weight"])
    checks = rows(snapshot(str(run), code=1))
    assert checks["task-specific GCA"]["status"] == "fail" and "131,072" in checks["task-specific GCA"]["detail"]
    assert checks["checkpoint loaded"]["status"] == "fail" and "heads.map" in checks["checkpoint loaded"]["detail"]


def test_run_without_gca_line_fails_once_training_started(tmp_path):
    run = tmp_path / "r"
    runs.write_manifest(run, runs.new_manifest("r", "phase4a", phase_config(), status="running"))
    (run / runs.EVENTS).write_text(train_event_line(1, 1, 3.0))
    checks = rows(snapshot(str(run), code=1))
    assert checks["task-specific GCA"]["status"] == "fail"
    assert checks["checkpoint loaded"]["status"] == "fail"


def test_created_run_is_pending_not_failed(tmp_path):
    run = tmp_path / "r"
    runs.write_manifest(run, runs.new_manifest("r", "phase4a", phase_config(), status="created"))
    snap = snapshot(str(run))
    assert snap["ok"] and {r["status"] for r in snap["verification"]} == {"pending"}


def test_metric_selection_exact_prefix_glob(tmp_path):
    run = write_run(tmp_path / "r", epochs=1)
    snap = snapshot(str(run), "-m", "loss/map/divider", "-m", "loss/object/*_cls", "-m", "grad_norm")
    assert list(snap["metrics"]) == ["loss/map/divider/dice", "loss/map/divider/focal",
                                     "loss/object/layer_-1_loss_cls", "grad_norm"]
    assert list(snapshot(str(run), "-m", "loss")["metrics"]) == ["loss"]  # exact wins over the prefix
    assert len(snapshot(str(run), "-m", "loss/")["metrics"]) == 5  # the components, not `loss`
    assert matches("loss", "loss") and matches("loss/map", "loss/map/divider/dice")
    assert not matches("loss/map/div", "loss/map/divider/dice")


def test_bad_run_name_is_one_line_exit_2(tmp_path):
    (tmp_path / "runs").mkdir()
    write_run(tmp_path / "runs" / "phase4a_stage1", epochs=1)
    result = run_cli("watch", "phase4a_stage", "--runs-root", str(tmp_path / "runs"), "--once")
    assert result.returncode == 2
    assert "phase4a_stage1" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    empty = run_cli("watch", "--runs-root", str(tmp_path / "nothing"), "--once")
    assert empty.returncode == 2 and "no runs under" in empty.stderr


def test_does_not_import_torch(tmp_path):
    run = write_run(tmp_path / "r", epochs=1)
    code = (
        "import sys\nfrom bevctl.cli import main\n"
        f"try:\n    main(['watch', {str(run)!r}, '--once'])\nexcept SystemExit:\n    pass\n"
        "import bevctl.watch.dashboard, bevctl.watch.follow\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY=\n" in result.stdout, result.stdout + result.stderr


def test_plot_writes_png_and_explains_missing_matplotlib(tmp_path):
    run = write_run(tmp_path / "r", epochs=6, iters=4)
    out = tmp_path / "loss.png"
    result = run_cli("watch", str(run), "--once", "--plot", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = (
        "import sys\nsys.modules['matplotlib'] = None\nfrom bevctl.cli import main\n"
        f"main(['watch', {str(run)!r}, '--plot', {str(tmp_path / 'x.png')!r}])\n"
    )
    missing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    assert missing.returncode == 3
    assert "pip install 'bevctl[plot]'" in missing.stderr and "Traceback" not in missing.stderr


# --------------------------------------------------------------------------------------------- others' logs


def test_mmcv_text_log_of_the_original_bevfusion(tmp_path):
    run = tmp_path / "run-601961a9-945d8599"
    run.mkdir()
    (run / "20221017_180000.log").write_text(MMCV_TEXT)
    snap = snapshot(str(run), "-m", "loss", "-m", "loss/map/divider/dice")
    assert snap["progress"]["epoch"] == 1 and snap["progress"]["iter"] == 1900
    assert snap["progress"]["iters_per_epoch"] == 2575
    assert snap["progress"]["eta_seconds"] == 5 * 86400 + 11 * 3600 + 59 * 60 + 1
    assert snap["metrics"]["loss"]["last"] == pytest.approx(15.5012)
    assert snap["metrics"]["loss/map/divider/dice"]["count"] == 2
    checks = rows(snap)
    assert checks["task-specific GCA"]["status"] == "ok"
    assert "object 131,072, map 131,072, total 262,144" in checks["task-specific GCA"]["detail"]
    ckpt = checks["checkpoint loaded"]
    assert ckpt["status"] == "info" and "task_gca.object.*, task_gca.map.*" in ckpt["detail"]
    assert snap["validation"]["metrics"]["object/map"] == pytest.approx(0.6512)
    assert snap["ingest"]["files"][0]["format"] == "text"
    screen = run_cli("watch", str(run / "20221017_180000.log"), "--once").stdout
    assert "mAP 0.6512" in screen and "NDS 0.6901" in screen and "car" in screen


def test_structured_log_next_to_the_text_log_gives_the_steps(tmp_path):
    """mmcv writes `<ts>.log.json` beside `<ts>.log`: its numbers have full precision, so the steps come from it;
    the text log still gives the checks, the iterations per epoch and the eta that only it holds."""
    run = tmp_path / "run-601961a9-945d8599"
    run.mkdir()
    (run / "20221017_180000.log").write_text(MMCV_TEXT)
    write_json_lines(run / "20221017_180000.log.json", MMCV_JSON)
    for target in (run, run / "20221017_180000.log", run / "20221017_180000.log.json"):
        snap = snapshot(str(target), "-m", "loss")
        assert snap["progress"]["iter"] == 100 and snap["metrics"]["loss"]["last"] == pytest.approx(9.5)
        assert snap["progress"]["iters_per_epoch"] == 2575  # from the text log
        assert rows(snap)["task-specific GCA"]["status"] == "ok"
        assert {f["format"] for f in snap["ingest"]["files"]} == {"mmcv-json", "text"}


def test_mmcv_json_log(tmp_path):
    path = write_json_lines(tmp_path / "20221017_180000.log.json", MMCV_JSON)
    with open(path, "a") as f:
        f.write("this is not json\n")
    snap = snapshot(str(path), "-m", "loss/object")
    assert snap["metrics"]["loss/object/loss_heatmap"]["last"] == pytest.approx(1.5)
    assert snap["progress"]["step_time"] == pytest.approx((2.34567 + 2.3) / 2)
    assert snap["validation"]["metrics"]["object/nds"] == pytest.approx(0.6901)
    assert snap["ingest"]["garbage"] == 1


def test_mmengine_text_and_scalars(tmp_path):
    session = tmp_path / "work_dirs" / "bevfusion_lidar" / "20250409_131000"
    (session / "vis_data").mkdir(parents=True)
    (session / "20250409_131000.log").write_text(MMENGINE_TEXT)
    write_json_lines(session / "vis_data" / "scalars.json", MMENGINE_SCALARS)
    snap = snapshot(str(tmp_path / "work_dirs" / "bevfusion_lidar"), "-m", "loss", "-m", "matched_ious")
    assert snap["progress"]["epoch"] == 5 and snap["progress"]["iter"] == 5600
    assert snap["progress"]["iters_per_epoch"] == 7724
    assert snap["metrics"]["loss"]["last"] == pytest.approx(8.4) and snap["metrics"]["loss"]["count"] == 2
    assert snap["metrics"]["matched_ious"]["last"] == pytest.approx(0.011)
    assert snap["validation"]["epoch"] == 5 and snap["validation"]["metrics"]["object/map"] == pytest.approx(0.649)
    scalars = snapshot(str(session / "vis_data" / "scalars.json"), "-m", "loss")
    assert scalars["metrics"]["loss"]["count"] == 2 and scalars["progress"]["global_step"] == 36496
    assert scalars["validation"]["metrics"]["object/nds"] == pytest.approx(0.696)


# --------------------------------------------------------------------------------------------- state


def test_debiased_ema_matches_tensorboard():
    values = [1.0, 2.0, float("nan"), 3.0]
    w = 0.6
    expected, last, n = [], 0.0, 0
    for v in values:
        if math.isnan(v):
            expected.append(v)
            continue
        last = last * w + (1 - w) * v
        n += 1
        expected.append(last / (1 - w**n))
    got = debiased_ema(values, w)
    assert got[0] == pytest.approx(1.0)  # debiased: the first point is not pulled toward 0
    assert got[1] == pytest.approx(expected[1]) and math.isnan(got[2]) and got[3] == pytest.approx(expected[3])


def _state_with(tmp_path, lines: list[str]) -> RunState:
    from bevctl.watch.sources import EventsParser

    state = RunState(tmp_path)
    state.ingest(EventsParser().feed(lines))
    return state


def test_grad_norm_alert_needs_a_streak(tmp_path):
    nan = float("nan")
    few = _state_with(tmp_path, [train_event_line(1, i, 2.0, grad_norm=nan if i in (3, 4, 5, 6) else 1.0)
                                 for i in range(1, 10)])
    assert not [a for a in few.snapshot()["alerts"] if a["kind"] == "nonfinite_grad_norm"]
    many = _state_with(tmp_path, [train_event_line(1, i, 2.0, grad_norm=nan if i > 3 else 1.0) for i in range(1, 10)])
    assert [a for a in many.snapshot()["alerts"] if a["kind"] == "nonfinite_grad_norm"][0]["level"] == "error"


def test_loss_spike_by_z_score_seeded_with_first_value(tmp_path):
    losses = [5.0 - 0.01 * i for i in range(40)]  # a smooth decline from a high start: no spike
    calm = _state_with(tmp_path, [train_event_line(1, i, v) for i, v in enumerate(losses)])
    assert not [a for a in calm.snapshot()["alerts"] if a["kind"] == "loss_spike"]
    noisy = [5.0 + 0.05 * ((-1) ** i) for i in range(40)] + [9.0]
    spiky = _state_with(tmp_path, [train_event_line(1, i, v) for i, v in enumerate(noisy)])
    spikes = [a for a in spiky.snapshot()["alerts"] if a["kind"] == "loss_spike"]
    assert spikes and "9" in spikes[0]["message"]


def _session_of_quiet_run(tmp_path, pid: int):
    from bevctl.watch.session import Session

    run = write_run(tmp_path / "r", epochs=1, end=False)
    runs.update_manifest(run, status="running", pid=pid)
    session = Session(run)
    session.poll(force_scan=True)
    for i, record in enumerate(session.state.train):  # one line every 10 s
        record["time"] = 1000.0 + 10 * i
    session.state.last_update = 1000.0 + 10 * len(session.state.train)
    return session


def test_stalled_run_alerts_after_n_times_the_median_interval(tmp_path):
    import os

    session = _session_of_quiet_run(tmp_path, os.getpid())  # alive
    quiet = session.snapshot(now=session.state.last_update + 20)
    assert not [a for a in quiet["alerts"] if a["kind"] == "stalled"]
    stalled = session.snapshot(now=session.state.last_update + 600)
    assert [a for a in stalled["alerts"] if a["kind"] == "stalled"]
    assert stalled["run"]["status"] == "running"
    session.close()


def test_dead_process_without_run_end_is_crashed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    session = _session_of_quiet_run(tmp_path, dead.pid)
    snap = session.snapshot(now=session.state.last_update + 600)
    assert [a for a in snap["alerts"] if a["kind"] == "process_gone"][0]["level"] == "error"
    assert snap["run"]["status"] == "crashed"
    session.close()


def test_container_gone_without_run_end(tmp_path, monkeypatch):
    """watch asks the run contract's one status authority (faked here: no Docker engine needed)."""
    from bevctl.watch.session import Session

    run = write_run(tmp_path / "r", epochs=1, end=False)
    runs.update_manifest(run, status="running", where="container", container_id="0123456789abcdef")
    verdict = runs.RunStatus("crashed", False, "container 0123456789ab is exited", 137)
    monkeypatch.setattr(runs, "run_status", lambda run_dir, *a, **k: verdict)
    session = Session(run)
    session.poll(force_scan=True)
    snap = session.snapshot()
    gone = [a for a in snap["alerts"] if a["kind"] == "container_gone"]
    assert gone and "exited" in gone[0]["message"] and snap["run"]["status"] == "crashed"
    assert snap["progress"]["eta_seconds"] is None and snap["progress"]["ended"]
    session.close()


def test_mmcv_lines_that_are_not_json_friendly_fall_back(tmp_path):
    from bevctl.watch.sources import TextLogParser, number

    lines = [
        "2022-10-17 18:10:44,756 - mmdet3d - INFO - Epoch [1][50/100]\tlr: 2.000e-04, eta: 0:10:00, time: 1.000, "
        "data_time: 0.100, memory: 100, loss: 3.0000, grad_norm: inf",
        "2022-10-17 18:11:44,756 - mmdet3d - INFO - Epoch [1][60/100]\tlr: 2.000e-04, eta: 0:09:00, time: 1.000, "
        "data_time: 0.100, memory: 100, loss: 2.5x00, grad_norm: 3.0",
        "2022-10-17 18:12:44,756 - mmdet3d - INFO - Epoch [1][oops]",
    ]
    parser = TextLogParser()
    records = parser.feed(lines)
    assert [r["iter"] for r in records] == [50, 60] and parser.garbage == 1
    assert number(records[0]["loss"]) == 3.0 and number(records[0]["grad_norm"]) == float("inf")
    assert records[1]["loss"] == "2.5x00" and records[1]["step_time"] == "1.000"  # the regex kept what it could
    assert records[1]["eta"] == "0:09:00"


def test_several_runs_at_once(tmp_path):
    good = write_run(tmp_path / "good", epochs=1)
    bad = write_run(tmp_path / "bad", epochs=1, nan_at=3)
    result = run_cli("watch", str(good), str(bad), "--json")
    assert result.returncode == 1  # one failing check anywhere fails the snapshot
    data = json.loads(result.stdout)
    assert [r["run"]["name"] for r in data["runs"]] == ["good", "bad"]
    assert [r["ok"] for r in data["runs"]] == [True, False]
    screen = run_cli("watch", str(good), str(bad), "--once").stdout
    assert screen.index("good") < screen.index("bad")


def test_mmcv_train_lines_whatever_their_layout():
    """Lines repeating a layout go through one pattern match, new layouts are learnt, odd lines fall back: every
    path gives the same records (values as strings, our field names)."""
    from bevctl.watch.sources import TextLogParser, number

    def line(it, items, minute="18:10"):
        return f"2022-10-17 {minute}:44,756 - mmdet3d - INFO - Epoch [2][{it}/100]\t" + ", ".join(items)

    base = ["lr: 2.000e-04", "eta: 1 day, 2:03:04", "time: 1.250", "data_time: 0.100", "memory: 100"]
    lines = [
        line(10, base + ["loss: 3.0000", "grad_norm: 25.0"]),
        line(20, base + ["loss: 2.9000", "grad_norm: 24.0"]),
        line(30, base + ["loss/map/divider/dice: 0.5", "loss: 2.8000", "grad_norm: nan"]),  # one more metric
        line(40, base + ["loss: 2.7000", "grad_norm: 23.0"], minute="18:11"),  # back to the first layout
        line(50, ["lr: 2.000e-04", "eta: 2 days, 0:00:01", "time: 1.000", "loss: 2.6000"]),
        line(60, ["lr: 2.000e-04", "eta: 0:09:00", "time: 1.000", "loss: 2.5000, extra", "grad_norm: 3.0"]),
    ]
    records = TextLogParser().feed(lines)
    assert [r["iter"] for r in records] == [10, 20, 30, 40, 50, 60]
    assert all(r["kind"] == "train" and r["epoch"] == 2 and r["iters_per_epoch"] == 100 for r in records)
    assert [number(r["loss"]) for r in records[:5]] == [3.0, 2.9, 2.8, 2.7, 2.6]
    assert [("loss/map/divider/dice" in r) for r in records] == [False, False, True, False, False, False]
    assert number(records[2]["grad_norm"]) != number(records[2]["grad_norm"])  # nan stays visible
    assert [number(r["step_time"]) for r in records[:5]] == [1.25, 1.25, 1.25, 1.25, 1.0]
    assert records[3]["time"] - records[0]["time"] == 60.0
    assert records[0]["eta"] == "1 day, 2:03:04" and records[4]["eta"] == "2 days, 0:00:01"
    assert records[-1]["eta"] == "0:09:00" and records[-1]["loss"] == "2.5000"  # the regex kept what it could
    # the same lines one by one (each parser sees a line first: the learning path) agree with the batch
    for record, text in zip(records, lines):
        alone = TextLogParser().feed([text])[0]
        assert alone.keys() == record.keys() and all(alone[k] == record[k] for k in alone if k != "eta")
