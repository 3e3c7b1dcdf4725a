"""The shared hostile-input checks catch what they claim to catch (a check that cannot fail proves nothing)."""

import os
import subprocess

import pytest

from tests.safety.hostile import Snapshot, expect_refusal, hostile


def _result(code, stderr, stdout=""):
    return subprocess.CompletedProcess(["bevctl"], code, stdout, stderr)


def test_snapshot_sees_changed_deleted_and_replaced_files(tmp_path):
    (tmp_path / "a").write_bytes(b"one")
    (tmp_path / "b").write_bytes(b"two")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "c").write_bytes(b"three")
    os.mkfifo(tmp_path / "fifo")  # recorded by kind only: opening it would block
    os.symlink("a", tmp_path / "link")
    snap = Snapshot.take(tmp_path)
    snap.assert_unchanged()
    (tmp_path / "new").write_bytes(b"new files are allowed")
    snap.assert_unchanged()
    assert snap.new_paths() == [tmp_path / "new"]
    (tmp_path / "a").write_bytes(b"ONE")
    (tmp_path / "d" / "c").unlink()
    (tmp_path / "link").unlink()
    os.symlink("b", tmp_path / "link")
    problems = "\n".join(snap.changes())
    assert "a: file changed" in problems and "c: deleted" in problems and "link: symlink changed" in problems
    with pytest.raises(AssertionError):
        snap.assert_unchanged()


def test_expect_refusal_accepts_one_line_with_a_fix():
    line = expect_refusal(_result(2, "error: name 'a/b' is not allowed (fix: use letters)\n"), 2, ["a/b"])
    assert line.startswith("error: name")


@pytest.mark.parametrize("result, code", [
    (_result(1, "error: internal error: KeyError: 'x' (run with --debug for the traceback)\n"), 1),
    (_result(2, "Traceback (most recent call last):\nerror: x (fix: y)\n"), 2),
    (_result(2, "error: x (fix: y)\nmore\n"), 2),
    (_result(2, "error: x without a fix\n"), 2),
    (_result(1, "error: x (fix: y)\n"), 2),
    (_result(2, "error: x (fix: y)\n"), 2),  # does not say "a/b"
])
def test_expect_refusal_rejects(result, code):
    with pytest.raises(AssertionError):
        expect_refusal(result, code, ["a/b"])


def test_hostile_through_the_real_cli(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    hostile("start", "no-such-phase", "--yes", cwd=tmp_path, code=2, says=["unknown phase 'no-such-phase'"],
            within=30)
