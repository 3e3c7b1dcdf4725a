import textwrap

import pytest

from bevctl.errors import UsageError
from bevctl.phases import load_phase, shipped_phases


def test_shipped_phases_all_load():
    names = set(shipped_phases())
    assert {"demo", "phase3", "phase4a"} <= names
    for name in names:
        phase = load_phase(name)
        assert phase.name == name


def test_phase4a_is_the_seeds_phase():
    phase = load_phase("phase4a")
    assert phase.model.gca == "task"
    assert phase.load_from.endswith("epoch_5.pth")
    assert phase.expect_missing == ["task_gca.object.*", "task_gca.map.*"]
    assert phase.train.epochs == 20
    divider = [b for b in phase.expectations if b.metric == "loss/map/divider/dice"]
    assert [(b.epochs, b.start, b.end) for b in divider] == [((5, 10), 0.525, 0.50), ((10, 15), 0.50, 0.45), ((15, 20), 0.45, 0.42)]


def test_phase_resolves_from_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {config: tiny, gca: shared}\n")
    phase = load_phase(str(path))
    assert phase.name == "mine" and phase.model.gca == "shared"


def _write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_typo_gives_file_line_and_did_you_mean(tmp_path):
    path = _write(tmp_path, """\
        model:
          config: tiny
        train:
          epochs: 3
          batch_sise: 2
        """)
    with pytest.raises(UsageError) as info:
        load_phase(path)
    message = info.value.one_line()
    assert f"{path}:5" in message
    assert "train.batch_sise" in message
    assert "did you mean 'batch_size'" in message
    assert info.value.code == 2
    assert "\n" not in message


def test_wrong_type_gives_file_line_and_key(tmp_path):
    path = _write(tmp_path, """\
        train:
          precision: fp8
        """)
    with pytest.raises(UsageError) as info:
        load_phase(path)
    message = info.value.one_line()
    assert f"{path}:2" in message and "train.precision" in message and "fp8" in message


def test_top_level_typo(tmp_path):
    path = _write(tmp_path, "laod_from: x.pth\n")
    with pytest.raises(UsageError) as info:
        load_phase(path)
    assert f"{path}:1" in info.value.message and "did you mean 'load_from'" in info.value.message


def test_unknown_phase_suggests_close_name():
    with pytest.raises(UsageError) as info:
        load_phase("phase4")
    assert "unknown phase 'phase4'" in info.value.message
    assert "phase4a" in info.value.fix


def test_overrides_apply_and_validate():
    phase = load_phase("demo", ["train.epochs=1", "model.gca=none", "data.workers=0"])
    assert (phase.train.epochs, phase.model.gca, phase.data.workers) == (1, "none", 0)
    with pytest.raises(UsageError) as info:
        load_phase("demo", ["train.epochs=zero"])
    assert "train.epochs" in info.value.message
    with pytest.raises(UsageError):
        load_phase("demo", ["train.epochs"])


def test_bad_yaml_syntax_is_one_line(tmp_path):
    path = _write(tmp_path, "model: {config: tiny\n")
    with pytest.raises(UsageError) as info:
        load_phase(path)
    assert "not valid YAML" in info.value.message and str(path) in info.value.message


def test_resume_and_load_from_are_exclusive(tmp_path):
    path = _write(tmp_path, "load_from: a.pth\nresume: auto\n")
    with pytest.raises(UsageError) as info:
        load_phase(path)
    assert "either resume" in info.value.message
