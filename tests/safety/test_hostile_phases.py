"""Hostile phase files and `--set` values through `bevctl start`: each ends fast with exit 2 and one line naming
the file (and line or byte offset) or the `--set` argument, with a fix; nothing is written, no file changes.

Each case is a real `bevctl` process (about a second here); one of each kind runs in the quick tier (`make
check`), the rest are marked slow and run in `make test`."""

import os
import textwrap
import time

import pytest

from bevctl import yamlsafe
from bevctl.errors import UsageError
from tests.safety.hostile import hostile

LOL = ('lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
       + "".join(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9))
       + "description: *l8\n")  # 9**9 = 387 million strings once expanded


def _phase(tmp_path, body, name="p.yaml"):
    path = tmp_path / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(textwrap.dedent(body))
    return str(path)


def _start(tmp_path, phase, *extra, **kw):
    """`bevctl start PHASE --yes --local` in an empty project folder; the refusal must leave it without a run."""
    result = hostile("start", phase, "--yes", "--local", *extra, cwd=tmp_path, **kw)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    return result


# ------------------------------------------------------------------------------------- YAML structure


def test_billion_laughs_is_refused_in_well_under_a_second(tmp_path):
    path = _phase(tmp_path, LOL)
    started = time.perf_counter()
    with pytest.raises(UsageError, match="aliases here expand to more than"):
        yamlsafe.load_file(path)
    assert time.perf_counter() - started < 0.5  # the measurement is on the node graph, never the expansion
    _start(tmp_path, path, says=[f"{path}:", "YAML aliases here expand to more than 10000 values"], within=20)


@pytest.mark.slow
def test_billion_laughs_in_a_set_value(tmp_path):
    value = "[" + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}" if i else "1"] * 10) + "]" for i in range(6)) + "]"
    _start(tmp_path, "demo", "--set", f"description={value}", says=["--set description", "expand to more than"],
           within=20)


@pytest.mark.slow
def test_recursive_alias(tmp_path):
    path = _phase(tmp_path, "expect_missing: &x [a, *x]\n")
    _start(tmp_path, path, says=[f"{path}:1", "alias refers to its own anchor"])


def test_duplicate_section_names_both_lines(tmp_path):
    path = _phase(tmp_path, """\
        train:
          epochs: 3
        model: {config: tiny}
        train:
          batch_size: 2
        """)
    _start(tmp_path, path, says=[f"{path}:4", "duplicate key 'train'", "first at line 1"])


@pytest.mark.slow
def test_duplicate_nested_key(tmp_path):
    path = _phase(tmp_path, "optim:\n  lr: 0.1\n  weight_decay: 0.0\n  lr: 0.2\n")
    _start(tmp_path, path, says=[f"{path}:4", "duplicate key 'optim.lr'", "first at line 2"])


@pytest.mark.slow
def test_deep_flow_nesting(tmp_path):
    path = _phase(tmp_path, "expect_missing: " + "[" * 100_000 + "]" * 100_000 + "\n")
    _start(tmp_path, path, says=[path], within=20)


@pytest.mark.slow
def test_nesting_over_the_depth_cap(tmp_path):
    path = _phase(tmp_path, "pretrained: " + "{a: " * 40 + "1" + "}" * 40 + "\n")
    _start(tmp_path, path, says=[f"{path}:1", "nested more than 32 levels"])


@pytest.mark.slow
def test_python_tag_is_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = _phase(tmp_path, f'description: !!python/object/apply:os.system ["touch {marker}"]\n')
    _start(tmp_path, path, says=[f"{path}:1", "python/object/apply:os.system", "is not allowed"])
    assert not marker.exists()


@pytest.mark.slow
def test_list_as_key(tmp_path):
    path = _phase(tmp_path, "? [train, epochs]\n: 3\n")
    _start(tmp_path, path, says=[f"{path}:1", "a mapping key must be a plain name"])


@pytest.mark.slow
def test_top_level_list(tmp_path):
    path = _phase(tmp_path, "- train\n- model\n")
    _start(tmp_path, path, says=[path, "must be a YAML mapping"])


@pytest.mark.slow
def test_tab_indentation_names_the_line(tmp_path):
    path = _phase(tmp_path, "train:\n  epochs: 3\nmodel:\n\tconfig: tiny\n")
    _start(tmp_path, path, says=[f"{path}:4", "not valid YAML"])


# ------------------------------------------------------------------------------------- text and files


def test_non_utf8_byte_names_offset_and_line(tmp_path):
    path = _phase(tmp_path, b"model:\n  config: tiny\ndescription: caf\xe9\n")
    _start(tmp_path, path, says=[f"{path}:3", "byte 0xe9 at offset 38 is not UTF-8"])


@pytest.mark.slow
def test_utf16_file(tmp_path):
    path = _phase(tmp_path, "model: {config: tiny}\n".encode("utf-16"))
    _start(tmp_path, path, says=[path, "byte 0xff at offset 0 is not UTF-8"])


@pytest.mark.slow
def test_nul_character(tmp_path):
    path = _phase(tmp_path, b"model: {config: tiny}\ndescription: a\x00b\n")
    _start(tmp_path, path, says=[f"{path}:2", "'\\x00'", "not allowed in YAML"])


@pytest.mark.slow
def test_oversized_file(tmp_path):
    path = _phase(tmp_path, "# padding\n" * 30_000 + "model: {config: tiny}\n")
    _start(tmp_path, path, says=[path, "bytes (at most 262144)"])


def test_fifo_phase_file_does_not_hang(tmp_path):
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    _start(tmp_path, str(path), says=[str(path), "is not a regular file"], within=20)


@pytest.mark.slow
def test_folder_named_like_a_phase_file(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    _start(tmp_path, str(tmp_path / "dir.yaml"), says=["is not a regular file"])


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_phase_file(tmp_path):
    path = _phase(tmp_path, "model: {config: tiny}\n")
    os.chmod(path, 0)
    try:
        _start(tmp_path, path, says=[path, "not readable"])
    finally:
        os.chmod(path, 0o644)


@pytest.mark.slow
def test_over_long_phase_path(tmp_path):
    _start(tmp_path, str(tmp_path / ("x" * 5000 + ".yaml")), says=["phase file"])


@pytest.mark.slow
def test_over_long_phase_name_is_clipped(tmp_path):
    result = _start(tmp_path, "p" * 3000, says=["unknown phase"])
    assert len(result.stderr) < 600


# ------------------------------------------------------------------------------------- numbers and ranges


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_lr_is_blamed_on_the_set_argument(tmp_path, value):
    result = _start(tmp_path, "phase4a", "--set", f"optim.lr={value}",
                    says=[f"--set optim.lr={value}", "optim.lr", "finite number"])
    assert "phase4a.yaml" not in result.stderr


def test_huge_epochs_in_a_file_names_its_line(tmp_path):
    path = _phase(tmp_path, "model: {config: tiny}\ntrain:\n  epochs: 1.0e+26\n")
    _start(tmp_path, path, says=[f"{path}:3", "train.epochs", "1e+26"])


@pytest.mark.slow
def test_infinite_epochs_in_a_file(tmp_path):
    path = _phase(tmp_path, "train:\n  batch_size: 2\n  epochs: .inf\n")
    _start(tmp_path, path, says=[f"{path}:3", "train.epochs"])


@pytest.mark.slow
def test_negative_batch_size(tmp_path):
    _start(tmp_path, "demo", "--set", "train.batch_size=-1", says=["--set train.batch_size=-1", "greater than or equal to 1"])


@pytest.mark.slow
def test_boolean_is_not_a_number(tmp_path):
    _start(tmp_path, "demo", "--set", "train.epochs=yes", says=["--set train.epochs=yes", "epochs must be a number"])


@pytest.mark.slow
def test_seed_beyond_numpy_range(tmp_path):
    _start(tmp_path, "demo", "--set", "train.seed=99999999999999999999", says=["train.seed", "4294967295"])


@pytest.mark.slow
def test_synthetic_scene_length_is_capped(tmp_path):
    _start(tmp_path, "demo", "--set", "data.synth.samples_per_scene=100000", says=["data.synth.samples_per_scene"])


@pytest.mark.slow
@pytest.mark.parametrize("extra, says", [
    (("--set", "data.version=v1.0-mini", "--set", "data.synth.scenes=50"),
     ["data.synth.scenes is 50", "v1.0-mini has room for 10", "v1.0-trainval"]),
    (("--set", "data.version=v1.0-trainval", "--set", "data.synth.scenes=500"), ["data.synth.scenes", "120"]),
    (("--set", "data.version=v1.0-test"), ["synthetic data is generated as v1.0-mini or v1.0-trainval"]),
])
def test_synthetic_scene_count_fits_the_version(tmp_path, extra, says):
    _start(tmp_path, "demo", *extra, says=says)


@pytest.mark.slow
def test_node_rank_outside_the_nodes(tmp_path):
    _start(tmp_path, "demo", "--set", "launch.node_rank=2", says=["--set launch.node_rank=2", "not below nnodes 1"])


# ------------------------------------------------------------------------------------- launcher inputs
# Slurm options become `#SBATCH` lines of the job script and container.env names go unquoted into `export NAME=`:
# a newline there would be a shell line of the job. Each is refused before anything is written or submitted.


def test_newline_in_a_slurm_partition_is_not_a_script_line(tmp_path):
    path = _phase(tmp_path, """\
        launch:
          where: slurm
          slurm: {partition: "gpu\\necho INJECTED"}
        """)
    result = _start(tmp_path, path, "--dry-run", says=[f"{path}:3", "launch.slurm.partition", "one word"])
    assert "#SBATCH" not in result.stdout and "\necho INJECTED" not in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("setting, says", [
    ("launch.slurm.account=proj 1", ["launch.slurm.account", "one word"]),
    ("launch.slurm.time=1:00:00\nrm -rf ~", ["launch.slurm.time", "DAYS-HH"]),
    ("launch.slurm.time=two days", ["launch.slurm.time", "UNLIMITED"]),
    ("launch.slurm.extra_sbatch=[\"--qos=high\\necho INJECTED\"]", ["extra_sbatch", "one line"]),
    ("launch.slurm.extra_sbatch=[\"\"]", ["extra_sbatch", "non-empty"]),
    ("container.env={\"A;touch x\": \"1\"}", ["container.env name", "environment variable name"]),
    ("container.env={\"X\\nY\": \"1\"}", ["container.env name"]),
    ("container.env={\"X\\nY\": 1}", ["container.env.X\\nY", "valid string"]),
    ("launch.rdzv_endpoint=10.0.0.1:99999", ["launch.rdzv_endpoint", "port 1-65535"]),
    ("launch.rdzv_endpoint=host;touch x", ["launch.rdzv_endpoint", "HOST:PORT"]),
])
def test_launcher_inputs_that_would_break_the_job_script(tmp_path, setting, says):
    _start(tmp_path, "demo", "--set", setting, says=says)


def test_an_unknown_key_holding_a_newline_is_shown_escaped_once(tmp_path):
    path = _phase(tmp_path, """\
        train:
          "ep\\nochs": 3
        """)
    result = _start(tmp_path, path, "--dry-run", says=[f"{path}:2", "unknown key 'train.ep\\nochs'", "epochs"])
    assert "\\\\n" not in result.stderr  # one backslash: the key as the file spells it


@pytest.mark.slow
def test_rdzv_endpoint_option_is_checked_like_the_phase_field(tmp_path):
    _start(tmp_path, "demo", "--rdzv-endpoint", "10.0.0.1:29500\nx", says=["launch.rdzv_endpoint", "HOST:PORT"])


# ------------------------------------------------------------------------------------- --set semantics


def test_set_type_error_is_blamed_on_the_argument_not_the_shipped_file(tmp_path):
    result = _start(tmp_path, "phase4a", "--set", "train.epochs=twenty",
                    says=["--set train.epochs=twenty", "train.epochs", "valid integer"])
    assert "phase4a.yaml" not in result.stderr


def test_empty_mapping_does_not_reset_a_section(tmp_path):
    _start(tmp_path, "phase4a", "--set", "train={}", says=["sets nothing", "merged into it, never replaces it"])


@pytest.mark.slow
def test_scalar_for_a_section(tmp_path):
    _start(tmp_path, "demo", "--set", "optim=0.1", says=["optim is a section", "--set optim.KEY=VALUE"])


@pytest.mark.slow
def test_set_without_equals(tmp_path):
    _start(tmp_path, "demo", "--set", "train.epochs", says=["is not key=value"])


@pytest.mark.slow
def test_set_with_an_empty_key_part(tmp_path):
    _start(tmp_path, "demo", "--set", "train..epochs=2", says=["empty key part"])


@pytest.mark.slow
def test_set_index_outside_a_list(tmp_path):
    _start(tmp_path, "phase4a", "--set", "expectations.7.start=1", says=["list of 5", "'7' is not an index"])


@pytest.mark.slow
def test_over_long_set_value_is_refused_and_clipped(tmp_path):
    result = _start(tmp_path, "demo", "--set", "description=" + "x" * 5000, says=["at most 4096 characters"])
    assert len(result.stderr) < 600


@pytest.mark.slow
def test_empty_data_root(tmp_path):
    _start(tmp_path, "demo", "--set", "data.root=''", says=["data.root", "at least 1 character"])


@pytest.mark.slow
def test_container_shm_size(tmp_path):
    _start(tmp_path, "demo", "--set", "container.shm_size=lots", says=["container.shm_size", "16g"])


@pytest.mark.slow
def test_relative_container_path(tmp_path):
    _start(tmp_path, "demo", "--set", "container.runs_mount=runs", says=["container.runs_mount", "absolute"])


# ------------------------------------------------------------------------------------- names


@pytest.mark.slow
@pytest.mark.parametrize("name, words", [
    ("../escape", "contains '/'"),
    ("a/b", "contains '/'"),
    ("two\nlines", "contains '\\n'"),
    ("n" * 300, "300 characters long"),
    ("..", "is not a folder name"),
    ("-rf", "starts with '-'"),
])
def test_bad_run_names_never_create_a_folder(tmp_path, name, words):
    _start(tmp_path, "demo", "--name", name, says=["run name", words])
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "escape").exists()


def test_absolute_run_name(tmp_path):
    target = tmp_path / "elsewhere"
    _start(tmp_path, "demo", "--name", str(target), says=["run name", "contains '/'"])
    assert not target.exists()


@pytest.mark.slow
def test_run_name_in_a_phase_file(tmp_path):
    path = _phase(tmp_path, "run:\n  name: ../../x\n")
    _start(tmp_path, path, says=[f"{path}:2", "run.name", "contains '/'"])


@pytest.mark.parametrize("item, says", [
    ("data.augment.global_scale=[0, 1]", "greater than 0"),
    ("data.augment.global_rot=[-100, 100]", "greater than or equal to -3.1416"),
    ("data.augment.global_rot=[nan, 0]", "data.augment.global_rot"),
    ("data.augment.global_rot=[0, 0, 0]", "data.augment.global_rot"),
    ("data.augment.image_rot=[1, 2]", "data.augment.image_rot"),
    ("launch.cpu_processes=0", "greater than or equal to 1"),
    ("launch.cpu_processes=100000", "less than or equal to 256"),
])
def test_augmentation_and_cpu_processes_are_bounded(tmp_path, item, says):
    _start(tmp_path, "demo", "--dry-run", "--set", item, says=[f"--set {item}", says])
