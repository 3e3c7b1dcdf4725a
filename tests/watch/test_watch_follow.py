"""The tailer: partial lines, truncation, rotation, garbage, new files, a writer in another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bevctl import runs
from bevctl.watch.follow import FileTail, Follower, Waker, filesystem_type
from bevctl.watch.session import Session
from bevctl.watch.sources import EventsParser, TextLogParser, number
from tests.conftest import run_cli
from tests.helpers.watch_fixtures import append, phase_config, train_event_line, write_run


def test_partial_last_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(train_event_line(1, 1, 3.0) + train_event_line(1, 2, 2.9)[:25])
    tail = FileTail(path, EventsParser())
    assert len(tail.read_lines()) == 1
    append(path, train_event_line(1, 2, 2.9)[25:])
    lines = tail.read_lines()
    assert len(lines) == 1 and json.loads(lines[0])["loss"] == 2.9
    assert tail.read_lines() == []


def test_truncation_starts_over(tmp_path):
    path = tmp_path / "x.log"
    path.write_text("one\ntwo\nthree\n")
    tail = FileTail(path, TextLogParser())
    assert tail.read_lines() == ["one", "two", "three"]
    with open(path, "w") as f:  # copytruncate
        f.write("four\n")
    assert tail.read_lines() == ["four"] and tail.truncations == 1


def test_rotation_drains_the_old_file_then_follows_the_new(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = open(path, "a", buffering=1)
    writer.write("a\n")
    tail = FileTail(path, EventsParser())
    assert tail.read_lines() == ["a"]
    os.rename(path, tmp_path / "events.jsonl.1")
    writer.write("b\n")  # the writer still holds the old file
    writer.close()
    assert tail.read_lines() == ["b"]  # renamed away, nothing new yet: keep reading the old file
    path.write_text("c\n")
    assert tail.read_lines() == ["c"] and tail.rotations == 1


def test_garbage_lines_are_counted_not_fatal(tmp_path):
    run = tmp_path / "r"
    runs.write_manifest(run, runs.new_manifest("r", "demo", {}, status="running"))
    (run / runs.EVENTS).write_text(
        train_event_line(1, 1, 3.0) + "not json at all\n[1, 2]\n\n" + train_event_line(1, 2, 2.5) + "{\"kind\": \"tr"
    )
    result = run_cli("watch", str(run), "--json")
    snap = json.loads(result.stdout)["runs"][0]
    assert snap["ingest"]["garbage"] == 2
    assert snap["metrics"]["loss"]["count"] == 2 and snap["metrics"]["loss"]["last"] == 2.5


def test_new_files_join_on_rescan(tmp_path):
    run = tmp_path / "run-original"
    run.mkdir()
    (run / "20221017_180000.log").write_text(
        "2022-10-17 18:10:44,756 - mmdet3d - INFO - Epoch [1][50/100]\tlr: 2.0e-04, eta: 0:10:00, time: 1.0, "
        "data_time: 0.1, memory: 100, loss: 3.0000\n")
    seen: list[dict] = []
    follower = Follower(run, seen.extend)
    follower.poll(force_scan=True)
    assert [number(r["loss"]) for r in seen if r["kind"] == "train"] == [3.0]  # text values stay strings
    (run / "20221018_090000.log").write_text(  # the run was resumed: a new log file
        "2022-10-18 09:10:44,756 - mmdet3d - INFO - Epoch [2][50/100]\tlr: 2.0e-04, eta: 0:05:00, time: 1.0, "
        "data_time: 0.1, memory: 100, loss: 2.0000\n")
    follower.poll(force_scan=True)
    assert [number(r["loss"]) for r in seen if r["kind"] == "train"] == [3.0, 2.0]
    follower.close()


def test_run_folder_created_empty_then_filled(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    session = Session(run)
    session.poll(force_scan=True)
    write_run(run, epochs=1)
    session.poll(force_scan=True)
    assert len(session.state.train) == 10  # events.jsonl only: the text log is read for the checks alone
    session.close()


WRITER = """
import sys, time, json
path = sys.argv[1]
with open(path, "a", buffering=1) as f:
    for i in range(1, 16):
        f.write(json.dumps({"schema": 1, "time": time.time(), "kind": "train", "epoch": 1, "iter": i,
                            "iters_per_epoch": 15, "lr": 1e-3, "step_time": 0.1, "loss": 10.0 - i}) + "\\n")
        time.sleep(0.1)
"""


def test_a_log_appended_by_another_process(tmp_path):
    run = tmp_path / "r"
    runs.write_manifest(run, runs.new_manifest("r", "demo", phase_config(expectations=[]), status="running"))
    events = run / runs.EVENTS
    events.touch()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(events)])
    session = Session(run)
    counts = []
    try:
        deadline = time.monotonic() + 20
        while writer.poll() is None and time.monotonic() < deadline:
            session.poll()
            counts.append(len(session.state.series("loss").values))
            time.sleep(0.05)
    finally:
        writer.wait(timeout=20)
    session.poll()
    values = session.state.series("loss").values
    assert values == [10.0 - i for i in range(1, 16)]
    assert len(set(counts)) >= 3  # new values showed up while the writer was still writing
    once = json.loads(run_cli("watch", str(run), "--json").stdout)["runs"][0]
    assert once["metrics"]["loss"]["last"] == -5.0 and once["progress"]["iter"] == 15
    session.close()


def test_waker_file_events_and_polling(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("")
    waker = Waker([tmp_path])
    assert waker.mode == "events"
    waker.wait(0.05)  # drop events from setting up
    start = time.monotonic()
    append(path, "x\n")
    assert waker.wait(2.0) is True
    assert time.monotonic() - start < 1.0
    waker.wait(0.1)
    path.read_text()
    assert waker.wait(0.3) is False  # our own reads do not wake it (that would spin)
    waker.close()
    polling = Waker([tmp_path], poll=True, poll_s=0.05)
    assert polling.mode == "poll" and polling.reason == "--poll"
    assert filesystem_type(Path("/proc")) == "proc"


def test_network_filesystems_are_polled(tmp_path, monkeypatch):
    from bevctl.watch import follow

    monkeypatch.setattr(follow, "filesystem_type", lambda path: "nfs4")
    waker = Waker([tmp_path])
    assert waker.mode == "poll" and "nfs4" in waker.reason
    start = time.monotonic()
    assert waker.wait(5.0) is False and time.monotonic() - start < 1.0  # wakes every poll interval to stat


def test_a_backlog_is_read_in_slices(tmp_path):
    path = tmp_path / "x.log"
    want = [f"line {i} " + "x" * (i % 37) for i in range(200)]
    path.write_text("\n".join(want) + "\n")
    tail = FileTail(path, TextLogParser())
    got: list[str] = []
    while True:
        got += tail.read_lines(limit=64)  # slices end mid-line; the rest waits for the next slice
        if tail.eof:
            break
    assert got == want


def test_events_backlog_decodes_the_same_with_and_without_orjson(monkeypatch):
    """A long backlog goes through one batch decode (orjson when installed); a NaN loss, which orjson refuses,
    falls back to the standard decoder, and a garbage line to line-by-line parsing: all agree."""
    import math

    import bevctl.watch.sources as sources

    clean = [train_event_line(1, i, 1.0 / i).rstrip("\n") for i in range(1, 101)]
    with_nan = clean[:50] + [train_event_line(1, 50, float("nan")).rstrip("\n")] + clean[50:]
    with_garbage = clean[:10] + ["{not json"] + clean[10:]
    results = {}
    for name, decoder in (("fast", sources._orjson), ("json", None)):
        monkeypatch.setattr(sources, "_orjson", decoder)
        for label, lines in (("clean", clean), ("nan", with_nan), ("garbage", with_garbage)):
            parser = EventsParser()
            results[name, label] = (parser.feed(lines), parser.garbage)
    for label in ("clean", "nan", "garbage"):
        fast, slow = results["fast", label], results["json", label]
        assert len(fast[0]) == len(slow[0]) and fast[1] == slow[1]
        for a, b in zip(*(r[0] for r in (fast, slow))):
            assert a.keys() == b.keys()
            assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)
    assert results["fast", "garbage"][1] == 1 and len(results["fast", "garbage"][0]) == 100
    assert math.isnan(results["fast", "nan"][0][50]["loss"])
