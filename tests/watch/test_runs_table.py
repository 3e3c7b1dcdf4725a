"""`bevctl runs`: last loss and last validation mAP / NDS / mIoU per run, sorting, --json, a corrupt run.json."""

from __future__ import annotations

import json

import pytest

from bevctl import runs
from tests.conftest import run_cli
from tests.helpers.watch_fixtures import write_run


def _runs(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "good", epochs=2, iters=3)
    write_run(root / "noval", epochs=1, iters=3, val=False)
    better = write_run(root / "better", epochs=2, iters=3)
    with open(better / runs.EVENTS, "a") as f:  # a later evaluation with better numbers
        f.write(json.dumps({"schema": 1, "time": 1.0, "kind": "val", "epoch": 3, "object/map": 0.7,
                            "object/nds": 0.72, "map/mean/iou@max": 0.55}) + "\n")
    (root / "broken").mkdir()
    (root / "broken" / "run.json").write_text("{not json")
    return root


def test_runs_json_and_sorting(tmp_path):
    root = _runs(tmp_path)
    result = run_cli("runs", "--runs-root", str(root), "--json", "--sort", "map")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == 1
    names = [r["name"] for r in data["runs"]]
    assert names[:2] == ["better", "good"] and set(names[2:]) == {"noval", "broken"}  # runs without mAP last
    better = data["runs"][0]
    assert (better["map"], better["nds"], better["miou"], better["val_epoch"]) == (0.7, 0.72, 0.55, 3)
    assert better["loss"] == pytest.approx((1.2 - 0.001 * 6) + 0.3 + 0.8 + 0.08 + (0.53 - 0.004 * 2))  # step 6
    broken = [r for r in data["runs"] if r["name"] == "broken"][0]
    assert broken["status"] == "unreadable" and "run.json" in broken["reason"]
    by_loss = [r["name"] for r in json.loads(run_cli("runs", "--runs-root", str(root), "--json", "--sort",
                                                     "loss").stdout)["runs"]]
    assert by_loss[-1] == "broken"
    bad = run_cli("runs", "--runs-root", str(root), "--sort", "speed")
    assert bad.returncode == 2 and "--sort takes one of" in bad.stderr


def test_runs_table_shows_a_corrupt_run_as_one_row(tmp_path):
    root = _runs(tmp_path)
    result = run_cli("runs", "--runs-root", str(root))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert set(rows) == {"good", "noval", "better", "broken"}
    assert "0.7" in rows["better"] and "0.72" in rows["better"] and "0.55" in rows["better"]
    assert "unreadable" in rows["broken"] and "broken unreadable" in result.stderr


def test_last_val_reads_backwards_across_chunk_borders(tmp_path):
    from bevctl.watch.runs_table import last_val

    path = tmp_path / "events.jsonl"
    lines = [json.dumps({"kind": "val", "epoch": 1, "object/map": 0.1})]
    lines += [json.dumps({"kind": "train", "loss": float(i), "pad": "x" * 50}) for i in range(200)]
    path.write_text("\n".join(lines) + "\n")
    assert last_val(path, chunk=97)["object/map"] == 0.1
    assert last_val(tmp_path / "missing.jsonl") == {}
