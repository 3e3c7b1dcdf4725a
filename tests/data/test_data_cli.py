"""`bevctl data synth` as a user runs it."""

import json

import pytest

from tests.conftest import run_cli

pytest.importorskip("nuscenes")


@pytest.mark.slow
def test_synth_json_then_no_op(tmp_path):
    out = tmp_path / "synth"
    args = ("data", "synth", "--out", str(out), "--scenes", "2", "--samples-per-scene", "1", "--sweeps", "0", "--json")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["schema"] == 1 and report["generated"] is True
    assert report["scenes"] == 2 and report["samples"] == 2 and report["version"] == "v1.0-mini"
    assert report["root"] == str(out) and report["seconds"] > 0 and report["annotations"] > 0
    assert (out / "v1.0-mini" / "scene.json").is_file()
    again = run_cli(*args)
    assert again.returncode == 0
    assert json.loads(again.stdout)["generated"] is False


def test_synth_human_output_goes_to_stderr(tmp_path):
    result = run_cli("data", "synth", "--out", str(tmp_path / "d"), "--scenes", "2", "--samples-per-scene", "1",
                     "--sweeps", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "mini_train" in result.stderr and "data.root=" in result.stderr


@pytest.mark.parametrize(
    "extra, words",
    [
        (("--scenes", "11"), "--scenes must be between 2 and 10 for v1.0-mini"),
        (("--version", "v1.0-trainval", "--scenes", "121"), "--scenes must be between 2 and 120 for v1.0-trainval"),
        (("--version", "v1.0-test"), "--version must be one of v1.0-mini, v1.0-trainval"),
        (("--sweeps", "12"), "--sweeps must be between 0 and 9"),
    ],
)
def test_synth_bad_arguments_are_one_line(tmp_path, extra, words):
    result = run_cli("data", "synth", "--out", str(tmp_path / "x"), *extra)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


def test_synth_trainval_names_the_train_and_val_splits(tmp_path):
    out = tmp_path / "tv"
    result = run_cli("data", "synth", "--out", str(out), "--version", "v1.0-trainval", "--scenes", "12",
                     "--samples-per-scene", "1", "--sweeps", "0")
    assert result.returncode == 0, result.stderr
    assert "data.version=v1.0-trainval" in result.stderr and "splits train / val" in result.stderr
    assert (out / "v1.0-trainval" / "scene.json").is_file() and not (out / "v1.0-mini").exists()


def test_synth_refuses_a_folder_with_other_content(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("data", "synth", "--out", str(tmp_path), "--scenes", "2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not empty" in lines[0]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_loader_bad_root_message_names_the_fix(tmp_path):
    from bevctl.errors import UsageError
    from model.data.nuscenes_dataset import NuScenesDataset

    with pytest.raises(UsageError) as err:
        NuScenesDataset(tmp_path / "nowhere", "v1.0-mini", "mini_train")
    assert err.value.code == 2
    assert f"bevctl data synth --out {tmp_path / 'nowhere'}" in err.value.one_line()


def test_synth_out_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = run_cli("data", "synth", "--out", str(target), "--scenes", "2")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "is a file" in result.stderr


def test_training_on_a_missing_root_stops_with_the_loaders_line(tmp_path):
    """The loader's message reaches the user of the trainer's command line as one line, no traceback."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    pytest.importorskip("model.train")
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [sys.executable, "-m", "model.train", "--phase", "demo", "--set", f"data.root={missing}",
         "--set", "data.synthetic=false", "--run-dir", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: data root {missing} does not exist (fix: run `bevctl data synth --out {missing}` for a "
                     "synthetic dataset, or set data.root to your nuScenes folder)"]
