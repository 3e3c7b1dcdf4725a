"""`bevctl watch` on what other setups log (mmengine's joined learning rates, mmcv/mmengine state-dict warnings,
`--phase` on an outside log), charts that put points where they were logged, and honest states."""

from __future__ import annotations

import json

import pytest

from bevctl import runs
from tests.conftest import run_cli
from tests.helpers.watch_fixtures import (
    MMCV_GROUPS_AND_UNEXPECTED,
    MMENGINE_TWO_LR_AND_MISMATCH,
    write_run,
)


def snapshot(*args: str, code: int | None = None) -> dict:
    result = run_cli("watch", *args, "--json")
    if code is not None:
        assert result.returncode == code, result.stdout + result.stderr
    return json.loads(result.stdout)["runs"][0]


def rows(snap: dict) -> dict[str, dict]:
    return {row["check"]: row for row in snap["verification"]}


def test_mmengine_two_learning_rates_and_a_size_mismatch(tmp_path):
    log = tmp_path / "20250409_131000.log"
    log.write_text(MMENGINE_TWO_LR_AND_MISMATCH)
    snap = snapshot(str(log), code=1)  # a size mismatch fails the check: exit 1
    assert snap["progress"]["lr"] == pytest.approx(6.7401e-04)
    assert snap["progress"]["iter"] == 5600 and snap["progress"]["iters_per_epoch"] == 7724
    assert snap["metrics"]["loss"]["last"] == pytest.approx(8.4)
    assert not [n for n in snap["available_metrics"] if "lr" in n]  # no bogus `base_lr: 6.7000e-04 lr` metric
    assert "loss_heatmap" in snap["available_metrics"]
    ckpt = rows(snap)["checkpoint loaded"]
    assert ckpt["status"] == "fail"
    detail = ckpt["detail"]
    assert "epoch_5.pth" in detail and "2 shape mismatch(es)" in detail
    assert "heads.object.heatmap_head.1.weight checkpoint [10, 64, 3, 3] vs model [8, 64, 3, 3]" in detail
    assert "2 unexpected key(s)" in detail and "encoders.camera.backbone.fc.weight" in detail
    screen = run_cli("watch", str(log), "--once")
    assert screen.returncode == 1 and "✗" in screen.stdout and "shape mismatch" in screen.stdout
    # -m lr charts the learning rate on request (it is bookkeeping, not a metric)
    assert "lr" in snapshot(str(log), "-m", "lr")["metrics"]


def test_mmcv_learning_rate_groups_and_unexpected_keys(tmp_path):
    log = tmp_path / "20221017_180000.log"
    log.write_text(MMCV_GROUPS_AND_UNEXPECTED)
    snap = snapshot(str(log), code=1)
    assert snap["metrics"]["loss"]["last"] == pytest.approx(15.5012) and snap["metrics"]["loss"]["count"] == 2
    assert snap["progress"]["lr"] == pytest.approx(2e-5)
    assert snap["progress"]["step_time"] == pytest.approx((9.773 + 9.751) / 2)
    assert not [n for n in snap["available_metrics"] if "lr" in n]
    ckpt = rows(snap)["checkpoint loaded"]
    assert ckpt["status"] == "fail" and "heads.object.old_head.weight" in ckpt["detail"]


def test_phase_applies_expected_missing_keys_and_bands_to_any_log(tmp_path):
    text = MMENGINE_TWO_LR_AND_MISMATCH.split("size mismatch")[0] + "missing keys in source state_dict: " \
        "task_gca.object.conv.weight, task_gca.map.conv.weight\n\n" + MMENGINE_TWO_LR_AND_MISMATCH.split(
            "task_gca.map.conv.weight\n\n")[1]
    log = tmp_path / "20250409_131000.log"
    log.write_text(text)
    plain = rows(snapshot(str(log), code=0))["checkpoint loaded"]
    assert plain["status"] == "info" and "--phase" in plain["detail"]
    phased = snapshot(str(log), "--phase", "phase4a")
    ckpt = rows(phased)["checkpoint loaded"]
    assert ckpt["status"] == "ok" and "all expected" in ckpt["detail"]  # phase4a expects task_gca.* missing
    assert rows(phased)["task-specific GCA"]["status"] == "fail"  # phase4a wants the GCA lines; none logged
    assert phased["run"]["phase"] == "phase4a"
    bad = run_cli("watch", str(log), "--phase", "no-such-phase", "--once")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_unknown_metric_names_the_available_ones(tmp_path):
    run = write_run(tmp_path / "r", epochs=1, iters=3)
    result = run_cli("watch", str(run), "-m", "loss/map/divider/dise", "--once")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "did you mean loss/map/divider/dice" in result.stderr and "available: loss" in result.stderr
    assert run_cli("watch", str(run), "-m", "nonexist", "--json").returncode == 2


def test_mid_epoch_start_sits_mid_axis_and_validation_is_not_smoothed(tmp_path):
    from bevctl.watch.session import Session

    log = tmp_path / "20250409_131000.log"
    log.write_text(MMENGINE_TWO_LR_AND_MISMATCH)
    session = Session(log)
    session.poll(force_scan=True)
    xs = session.state.series("loss").positions(session.state.iters_per_epoch())
    assert xs == pytest.approx([4 + 5550 / 7724, 4 + 5600 / 7724])  # not spread over epoch 5 from 4.0
    session.close()
    # a run stopped at iteration 14 of 16 ends at 0.875 of its epoch, not at 1.0
    run = tmp_path / "runs" / "stopped"
    run.mkdir(parents=True)
    runs.write_manifest(run, runs.new_manifest("stopped", "demo", {}, status="stopped"))
    with runs.EventWriter(run / runs.EVENTS) as events:
        for it in range(1, 15):
            events.emit("train", epoch=1, iter=it, iters_per_epoch=16, global_step=it, lr=1e-3, step_time=0.5,
                        loss=227.0 if it == 1 else 3.0 / it)
        events.emit("val", epoch=1, **{"object/map": 0.25})
        events.emit("run_end", status="stopped", exit_code=0, message="stopped by SIGTERM at epoch 1 iter 14")
    session = Session(run, ["loss", "object/map"])
    session.poll(force_scan=True)
    snap = session.snapshot()
    assert session.state.series("loss").positions()[-1] == pytest.approx(14 / 16)
    assert snap["metrics"]["object/map"]["source"] == "val" and snap["metrics"]["object/map"]["smoothed"] is None
    # honest state: no ETA for a stopped run, the reason as an alert
    assert snap["run"]["status"] == "stopped" and snap["progress"]["eta_seconds"] is None
    assert any(a["kind"] == "run_stopped" and "SIGTERM" in a["message"] for a in snap["alerts"])
    from bevctl.watch.chart import Curve, braille_chart, use_log

    loss = session.state.series("loss")
    assert use_log([Curve(loss.values)], None)  # 227 down to 0.21: log scale by itself
    assert not use_log([Curve(loss.values)], False)
    chart = braille_chart([Curve(loss.values, loss.positions(), loss.smoothed)], 60, 6).plain
    assert "log" in chart and "0.875" in chart.splitlines()[-1]
    session.close()
    screen = run_cli("watch", str(run), "--once").stdout
    assert "ETA" not in screen and "stopped" in screen and "SIGTERM" in screen


def test_verification_and_validation_stay_visible_at_80x24(tmp_path):
    from rich.console import Console

    from bevctl.watch.dashboard import render
    from bevctl.watch.session import Session

    run = write_run(tmp_path / "r", epochs=3, iters=5)
    session = Session(run, ["loss", "loss/map/divider/dice", "object/map", "grad_norm"])
    session.poll(force_scan=True)
    console = Console(width=80, height=24, record=True, force_terminal=False, color_system=None)
    console.print(render([session], [session.snapshot()], console, live=True))
    screen = console.export_text()
    lines = screen.rstrip("\n").splitlines()
    assert len(lines) <= 24, screen
    assert "verification" in screen and "validation" in screen and "mAP 0.6000" in screen
    assert "loss (train)" in screen and "✓ losses finite" in screen  # the chart shrank, checks kept their marks
    session.close()


def test_compare_overlays_runs_in_one_chart(tmp_path):
    a = write_run(tmp_path / "runs" / "a", epochs=2, iters=5)
    b = write_run(tmp_path / "runs" / "b", epochs=2, iters=5, dice=lambda e, i: 0.6)
    result = run_cli("watch", str(a), "--compare", str(b), "--once", "-m", "loss")
    assert result.returncode == 0, result.stderr
    assert "loss (train)  a  b" in result.stdout
    out = tmp_path / "compare.png"
    assert run_cli("watch", str(a), "--compare", str(b), "--once", "--plot", str(out)).returncode == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_a_resumed_run_is_not_ended_by_the_run_end_of_the_attempt_before(tmp_path):
    import os
    import time

    from bevctl.watch.session import Session

    run = write_run(tmp_path / "r", epochs=1, iters=3)  # ends with run_end finished
    runs.update_manifest(run, status="running", started_at=time.time() + 1, pid=os.getpid())  # resumed after it
    session = Session(run)
    session.poll(force_scan=True)
    snap = session.snapshot()
    assert snap["run"]["status"] == "running" and not [a for a in snap["alerts"] if a["kind"].startswith("run_")]
    session.close()


def test_by_iteration_lines_of_mmengine_and_mmcv():
    from bevctl.watch.textlog import TextLogParser

    records = TextLogParser().feed([
        "2025/04/09 13:17:08 - mmengine - INFO - Iter(train) [  50/10000]  base_lr: 1.0000e-03 lr: 1.0000e-03  "
        "eta: 1:00:00  time: 0.5000  data_time: 0.0100  memory: 100  loss: 2.0000",
        "2022-10-17 18:10:44,756 - mmdet3d - INFO - Iter [60/1000]\tlr: 2.000e-04, eta: 0:10:00, time: 1.000, loss: 3.0",
    ])
    assert [(r["global_step"], r["iters_per_epoch"], r["loss"], r["step_time"]) for r in records] == [
        (50, 10000, "2.0000", "0.5000"), (60, 1000, "3.0", "1.000")]
    assert records[0]["lr"] == "1.0000e-03" and records[0]["base_lr"] == "1.0000e-03"
