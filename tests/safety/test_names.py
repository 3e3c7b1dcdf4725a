"""Run names are one safe path component; extra mounts are absolute, existing and unique (bevctl/names.py)."""

import pytest

from bevctl.errors import UsageError
from bevctl.names import NAME_MAX, safe_name, validate_mounts, validate_run_name


@pytest.mark.parametrize("name", ["demo", "phase4a_stage1_task_gca", "a.b-c_d", "x" * NAME_MAX, "1", "v1.0", "a..b"])
def test_good_run_names_pass(name):
    assert validate_run_name(name) == name


@pytest.mark.parametrize("name, words", [
    ("../x", "contains '/'"),
    ("/tmp/x", "contains '/'"),
    ("a/b", "contains '/'"),
    ("a\nb", "contains '\\n'"),
    ("x" * 300, "300 characters long (at most 100)"),
    ("", "is empty"),
    (".", "is not a folder name"),
    ("..", "is not a folder name"),
    ("-rf", "starts with '-'"),
    ("my run", "contains ' '"),
    ("caf\u00e9", "contains"),
    ("a\\b", "contains"),
    ("run\x00", "contains '\\x00'"),
])
def test_bad_run_names_are_one_line_with_a_valid_suggestion(name, words):
    with pytest.raises(UsageError) as info:
        validate_run_name(name)
    line = info.value.one_line()
    assert info.value.code == 2
    assert "\n" not in line and words in line, line
    assert len(line) < 300, line  # a 300-character name is clipped, not echoed whole
    suggestion = info.value.fix.split("--name ", 1)[1].split(" ", 1)[0]
    assert validate_run_name(suggestion) == suggestion  # the fix it offers is itself accepted


def test_safe_name():
    assert safe_name("../x") == "x"
    assert safe_name("my run/1") == "my-run-1"
    assert safe_name("..") == "run" and safe_name("") == "run"
    assert len(safe_name("y" * 500)) == NAME_MAX


def test_good_mounts(tmp_path):
    spec = f"{tmp_path}:/weights:ro; {tmp_path}/:/cache//x/ ;"
    assert validate_mounts(spec) == [(str(tmp_path), "/weights", "ro"), (str(tmp_path), "/cache/x", "rw")]
    assert validate_mounts("") == [] and validate_mounts(" ; ") == []


@pytest.mark.parametrize("entry, words", [
    (":/x", "empty host path (it would mount the current folder)"),
    ("{tmp}/missing:/x", "does not exist"),
    ("relative/dir:/x", "is relative"),
    ("{tmp}:x", "container path 'x' is not absolute"),
    ("{tmp}:", "is not absolute"),
    ("{tmp}:/", "would hide the whole image"),
    ("{tmp}:/x:rwx", "mode 'rwx'"),
    ("{tmp}", "is not HOST:CONTAINER"),
    ("{tmp}:/x:ro:z", "is not HOST:CONTAINER"),
    ("{tmp}:/x;{tmp}:/x/", "/x is already mounted"),
    ("{tmp}:/workspace/bevfusion", "already mounted (by bevctl's own mounts)"),
    ("{tmp}:/a\nb", "control character"),
])
def test_bad_mounts_are_refused(tmp_path, entry, words):
    with pytest.raises(UsageError) as info:
        validate_mounts(entry.format(tmp=tmp_path), taken=["/workspace/bevfusion"])
    line = info.value.one_line()
    assert words in line and "BEVCTL_EXTRA_MOUNTS" in line and "\n" not in line and info.value.fix, line
