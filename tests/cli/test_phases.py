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


# ------------------------------------------------------------------------------------- --set semantics


def test_mapping_is_merged_into_a_section_never_replacing_it():
    base = load_phase("phase4a")
    phase = load_phase("phase4a", ["train={epochs: 2}", "launch={slurm: {partition: gpu}}"])
    assert phase.train.epochs == 2
    assert (phase.train.batch_size, phase.train.precision) == (base.train.batch_size, base.train.precision)
    assert phase.launch.gpus == base.launch.gpus and phase.launch.slurm.partition == "gpu"
    # the same as the keys one by one
    assert phase == load_phase("phase4a", ["train.epochs=2", "launch.slurm.partition=gpu"])


def test_empty_mapping_and_scalar_for_a_section_are_refused():
    with pytest.raises(UsageError, match="sets nothing"):
        load_phase("phase4a", ["train={}"])
    with pytest.raises(UsageError, match="train is a section"):
        load_phase("phase4a", ["train=null"])


def test_text_fields_take_the_text_as_typed():
    phase = load_phase("demo", ["run.name=007", "data.synthetic=false", "data.version=1.0", "description=a: b",
                                "load_from=null"])
    assert (phase.run.name, phase.data.version, phase.description, phase.load_from) == ("007", "1.0", "a: b", None)
    assert load_phase("demo", ["description='quoted'"]).description == "quoted"


def test_mapping_fields_take_the_rest_of_the_key_whole():
    phase = load_phase("phase4a", ["pretrained.encoders.camera.backbone=/w/swin.pth", "container.env.NCCL_DEBUG=INFO"])
    assert phase.pretrained == {"encoders.camera.backbone": "/w/swin.pth"}
    assert phase.container.env == {"NCCL_DEBUG": "INFO"}


def test_list_items_by_index():
    phase = load_phase("phase4a", ["expectations.0.tolerance=0.05"])
    assert phase.expectations[0].tolerance == 0.05


def test_set_errors_blame_the_argument_and_carry_a_fix():
    with pytest.raises(UsageError) as info:
        load_phase("phase4a", ["train.epochs=many"])
    assert info.value.message.startswith("--set train.epochs=many: train.epochs:")
    assert "phase4a.yaml" not in info.value.one_line() and info.value.fix


def test_file_errors_name_the_line_and_carry_a_fix(tmp_path):
    path = _write(tmp_path, "optim:\n  lr: .nan\n")
    with pytest.raises(UsageError) as info:
        load_phase(path)
    assert info.value.message.startswith(f"{path}:2: optim.lr: Input should be a finite number")
    assert info.value.fix == f"correct optim.lr in {path}:2"


def test_resolved_config_round_trips_and_bad_config_names_run_json():
    from bevctl.phases import phase_from_dict

    for name in shipped_phases():
        phase = load_phase(name)
        assert phase_from_dict(phase.model_dump(mode="json")) == phase
    with pytest.raises(UsageError) as info:
        phase_from_dict({"name": "x", "train": {"epochs": float("inf")}})
    assert "<config>" in info.value.message and "run.json" in info.value.fix


# ------------------------------------------------------------------------------------- YAML limits


def test_anchors_and_merge_keys_within_the_limits_still_work(tmp_path):
    path = _write(tmp_path, """\
        optim: &opt {lr: 0.001, weight_decay: 0.0}
        train:
          epochs: &n 3
          eval_interval: *n
        """)
    phase = load_phase(path)
    assert phase.train.eval_interval == 3 and phase.optim.lr == 0.001


def test_yaml_limits_in_process():
    from bevctl import yamlsafe

    with pytest.raises(UsageError, match="x.yaml:3: duplicate key 'a.b' \\(first at line 2\\)"):
        yamlsafe.parse("a:\n  b: 1\n  b: 2\n", "x.yaml")
    with pytest.raises(UsageError, match="expand to more than"):
        yamlsafe.parse("a: &a [" + ",".join(["1"] * 200) + "]\nb: [" + ",".join(["*a"] * 60) + "]\n", "x.yaml")
    with pytest.raises(UsageError, match="refers to its own anchor"):
        yamlsafe.parse("a: &a {b: *a}\n", "x.yaml")
    with pytest.raises(UsageError, match=r"x.yaml:2: byte 0x80 at offset 7 is not UTF-8"):
        yamlsafe.decode(b"a: 1\nb:\x80\n", "x.yaml")
    with pytest.raises(UsageError, match="a value cannot be read: month must be in 1..12"):
        yamlsafe.parse("description: 2001-13-45\n", "x.yaml")
    data, lines = yamlsafe.parse("a:\n  b: [1, 2]\n", "x.yaml")
    assert data == {"a": {"b": [1, 2]}} and lines == {("a",): 1, ("a", "b"): 2, ("a", "b", 0): 2, ("a", "b", 1): 2}


def test_override_edge_cases_are_one_line_with_a_fix():
    cases = {
        "train.epochs=" + "9" * 5000: "a number with thousands of digits",
        "model.heads.0=map": "model.heads is a list the phase does not spell out",
        "trainer.repo=/x": "--set trainer.repo=/x: trainer.config: Field required",
        "launch.slurm=null": "launch.slurm is a section",
        "train.epochs=!!python/object:os.system x": "is not allowed",
    }
    for item, words in cases.items():
        with pytest.raises(UsageError) as info:
            load_phase("phase4a", [item])
        line = info.value.one_line()
        assert words in line and info.value.fix and "\n" not in line and len(line) < 400, line
