import json
import math

import pytest

from bevctl import runs


def test_event_round_trip_keeps_fields_and_nan(tmp_path):
    path = tmp_path / "events.jsonl"
    with runs.EventWriter(path) as writer:
        writer.emit("run_start", phase="demo", world_size=1)
        writer.emit("train", epoch=1, iter=2, iters_per_epoch=10, lr=1e-3, loss=float("nan"),
                    **{"loss/map/divider/dice": 0.52, "stats/object/matched_ious": 0.1})
    events = runs.read_events(path)
    assert [e["kind"] for e in events] == ["run_start", "train"]
    assert all(e["schema"] == runs.SCHEMA_VERSION and isinstance(e["time"], float) for e in events)
    assert math.isnan(events[1]["loss"])
    metrics = dict(runs.iter_metrics(events[1]))
    assert metrics["loss/map/divider/dice"] == 0.52 and "epoch" not in metrics and "lr" not in metrics


def test_reader_keeps_unknown_future_fields_and_skips_garbage(tmp_path):
    path = tmp_path / "events.jsonl"
    future = {"schema": 2, "time": 1.0, "kind": "train", "epoch": 1, "new_field": {"x": 1}}
    path.write_text("not json\n" + json.dumps(future) + "\n[1,2]\n" + '{"schema": 1, "kind": "tra')
    events = runs.read_events(path)
    assert events == [future]


def test_writer_rejects_unknown_kind(tmp_path):
    with runs.EventWriter(tmp_path / "e.jsonl") as writer:
        with pytest.raises(ValueError):
            writer.emit("trian")


def test_manifest_is_written_atomically_and_updated(tmp_path):
    manifest = runs.new_manifest("r1", "demo", {"name": "demo"}, pid=123)
    runs.write_manifest(tmp_path, manifest)
    assert runs.read_manifest(tmp_path)["pid"] == 123
    runs.update_manifest(tmp_path, status="finished", exit_code=0)
    data = runs.read_manifest(tmp_path)
    assert (data["status"], data["exit_code"], data["name"]) == ("finished", 0, "r1")
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp files left behind


def test_text_log_matches_mmcv_format(tmp_path):
    line = runs.format_train_line(1, 50, 3862, 2e-4, 93784, 2.345, 0.123, 24562,
                                  {"loss": 9.8765, "grad_norm": 28.0689, "loss/map/divider/dice": 0.5})
    assert line == ("Epoch [1][50/3862]\tlr: 2.000e-04, eta: 1 day, 2:03:04, time: 2.345, data_time: 0.123, "
                    "memory: 24562, loss/map/divider/dice: 0.5000, loss: 9.8765, grad_norm: 28.0689")
    log = runs.TextLog(tmp_path / "x.log")
    log.info("[BEVFusion] Task-specific GCA mode enabled")
    text = (tmp_path / "x.log").read_text()
    assert " - bevctl - INFO - [BEVFusion] Task-specific GCA mode enabled" in text


def test_compress_keys_like_the_seed():
    keys = ["task_gca.object.fc.0.weight", "task_gca.object.fc.2.weight", "task_gca.map.fc.0.weight"]
    assert runs.compress_keys(keys) == ["task_gca.object.*", "task_gca.map.*"]


def test_list_run_dirs_newest_first(tmp_path):
    for name, t in [("old", 1.0), ("new", 2.0)]:
        runs.write_manifest(tmp_path / name, runs.new_manifest(name, "demo", {}, started_at=t))
    (tmp_path / "not-a-run").mkdir()
    assert [p.name for p in runs.list_run_dirs(tmp_path)] == ["new", "old"]
