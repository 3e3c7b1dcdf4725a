"""Hostile checkpoint files (issue 15): `bevctl check-ckpt` refuses each at once with one line and a fix.

Regular files only (a FIFO or device is never opened), zip bombs refused from the zip directory before anything
is inflated, safetensors headers size- and depth-checked before parsing, damaged files named as damaged.
Each case runs the installed `bevctl` through tests/safety/hostile.py (exit code, one `error:` line with a fix,
no traceback, no pre-existing file changed).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.safety.hostile import expect_refusal, hostile

ARGS = ("--model-config", "tiny", "--gca", "none")


def check(path: Path, tmp_path: Path, says, within: float = 15):
    return hostile("check-ckpt", str(path), *ARGS, cwd=tmp_path, code=2, says=says, within=within, timeout=60)


def _safetensors(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)  # nobody writes to it: an open() for reading would block for ever
    check(fifo, tmp_path, ["FIFO", "not a checkpoint file"])


def test_directory_is_refused(tmp_path):
    (tmp_path / "ckpt.pth").mkdir()
    check(tmp_path / "ckpt.pth", tmp_path, ["a directory"])


def test_character_device_is_refused(tmp_path):
    check(Path("/dev/zero"), tmp_path, ["character device"])


def test_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "loop.pth").symlink_to(tmp_path / "loop.pth")
    check(tmp_path / "loop.pth", tmp_path, ["loop.pth", "cannot read"])


def _rss_of_check(path: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run check-ckpt in a child and report that child's peak RSS in MB (a wrapper process measures it alone)."""
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr)\n"
               "print('RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr)\n"
               "sys.exit(r.returncode)\n")
    result = subprocess.run([sys.executable, "-c", wrapper, str(BIN / "bevctl"), "check-ckpt", str(path), *ARGS],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60,
                            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})
    rss_line = [line for line in result.stderr.splitlines() if line.startswith("RSS ")]
    result.stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("RSS "))
    return result, int(rss_line[0].split()[1])


def test_zip_bomb_is_refused_before_it_inflates(tmp_path):
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data.pkl", "w", force_zip64=True) as fh:
            chunk = b"\0" * (1 << 20)
            for _ in range(400):  # 400 MB of zeros, about 400 KB on disk
                fh.write(chunk)
    assert bomb.stat().st_size < 2 << 20
    result, rss_mb = _rss_of_check(bomb, tmp_path)
    expect_refusal(result, 2, ["zip bomb", "data.pkl"])
    assert rss_mb < 200, f"check-ckpt grew to {rss_mb} MB on a {bomb.stat().st_size}-byte bomb"


def test_many_small_inflating_members_are_refused(tmp_path):
    bomb = tmp_path / "members.pth"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        for i in range(40):
            zf.writestr(f"archive/data/{i}", b"\0" * (1 << 20))  # 1 MB each, ~1 KB compressed
    check(bomb, tmp_path, ["inflates", "refused"])


def test_deeply_nested_safetensors_header_is_one_line(tmp_path):
    path = _safetensors(tmp_path / "deep.safetensors", b"{\"a\":" + b"[" * 100_000 + b"]" * 100_000 + b"}")
    check(path, tmp_path, ["nests deeper"])


def test_safetensors_header_longer_than_the_file(tmp_path):
    path = tmp_path / "long.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    check(path, tmp_path, ["header length", "does not fit"])


def test_safetensors_header_that_is_not_json(tmp_path):
    check(_safetensors(tmp_path / "bad.safetensors", b"{not json at all}"), tmp_path, ["not valid JSON"])


def test_safetensors_entry_that_is_not_an_object(tmp_path):
    check(_safetensors(tmp_path / "odd.safetensors", b'{"w": [1, 2]}'), tmp_path, ["'w'", "not an object"])


def test_truncated_safetensors(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    check(_safetensors(tmp_path / "cut.safetensors", header, b"\0" * 10), tmp_path, ["truncated"])


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> bytes:
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("real") / "real.pth"
    torch.save({"state_dict": {"fuser.0.weight": torch.zeros(64, 64), "fuser.1.weight": torch.ones(64)}}, path)
    return path.read_bytes()


def test_truncated_torch_checkpoint(tmp_path, real_checkpoint):
    path = tmp_path / "cut.pth"
    path.write_bytes(real_checkpoint[: len(real_checkpoint) // 2])
    check(path, tmp_path, ["damaged"])


def test_zero_filled_tail(tmp_path, real_checkpoint):
    path = tmp_path / "zeros.pth"
    path.write_bytes(real_checkpoint[:200] + b"\0" * (len(real_checkpoint) - 200))
    check(path, tmp_path, ["zeros.pth", "damaged"])


def test_garbage_bytes(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(4096)))
    check(path, tmp_path, ["not a checkpoint"])


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    check(tmp_path / "empty.pth", tmp_path, ["empty"])


def test_text_file(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    check(tmp_path / "notes.pth", tmp_path, ["text file"])


def test_git_lfs_pointer(tmp_path):
    (tmp_path / "lfs.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    check(tmp_path / "lfs.pth", tmp_path, ["text file"])


def test_pickle_that_would_run_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    check(tmp_path / "evil.pth", tmp_path, ["refused to unpickle", "system"])
    assert not (tmp_path / "pwned").exists()


def test_deeply_nested_pickle(tmp_path):
    data = b"\x80\x02" + b"]" * 200_000 + b"."  # 200k lists on the stack, never closed: not a checkpoint
    (tmp_path / "deep.pth").write_bytes(data)
    check(tmp_path / "deep.pth", tmp_path, ["deep.pth", "not a checkpoint"])


def test_fifo_as_load_from_ends_doctor_and_start_at_once(tmp_path):
    import time

    from tests.conftest import run_cli

    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    started = time.monotonic()
    doctor = run_cli("doctor", "--phase", "demo-phase4a", "--set", f"load_from={fifo}", cwd=tmp_path, timeout=60)
    assert doctor.returncode == 1 and "weights.pth is not a regular file" in doctor.stdout + doctor.stderr
    start = run_cli("start", "demo-phase4a", "--set", f"load_from={fifo}", "--yes", "--local", cwd=tmp_path, timeout=60)
    assert start.returncode == 1 and "Traceback" not in start.stdout + start.stderr
    assert "load_from" in start.stderr.strip().splitlines()[-1]
    assert time.monotonic() - started < 60
