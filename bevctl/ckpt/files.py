"""Open a checkpoint file whatever its format: regular files only, every failure one `CheckpointUnreadable` line.

The format readers (`reader` for torch zips and pickles, `safetensors`, `trusted` for torch.load) sit below this
module; it is the only place that chooses between them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bevctl.ckpt.reader import read_pickle, read_zip
from bevctl.ckpt.safetensors import read_safetensors
from bevctl.ckpt.trusted import load_with_torch
from bevctl.ckpt.types import CheckpointUnreadable, Loaded

ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (pre-1.6) format starts with a pickled magic number 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_file(path: Path) -> Path:
    """`path` when it is a regular file (symlinks followed); a pipe or device is refused before any open, which
    could block or never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointUnreadable(f"{path} not found", fix="check the path (ls -l)") from None
    except OSError as exc:
        raise CheckpointUnreadable(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise CheckpointUnreadable(f"{path} is {what}, not a checkpoint file",
                                   fix="point at the .pth or .safetensors file itself")
    return path


def head(path: Path, n: int = 16) -> bytes:
    """The first bytes, opened non-blocking and re-checked as a regular file (the path may change after stat)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise CheckpointUnreadable(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointUnreadable(f"{path} is not a regular file", fix="point at the checkpoint file itself")
        return os.read(fd, n)
    finally:
        os.close(fd)


def sniff(path: Path) -> str:
    """The file's format from its first bytes: zip, safetensors, legacy-torch, pickle, empty or unknown."""
    first = head(regular_file(path))
    if not first:
        return "empty"
    if first.startswith(ZIP_MAGIC) or first.startswith(b"PK\x05\x06"):
        return "zip"
    if first.startswith(LEGACY_MAGIC[:14]):
        return "legacy-torch"
    if len(first) >= 9 and first[8:9] == b"{":
        return "safetensors"
    if first[:1] == b"\x80":
        return "pickle"
    return "unknown"


def read_any(path: Path, trust: bool = False) -> Loaded:
    """Dispatch on the file's format; every failure is a `CheckpointUnreadable` with one line."""
    kind = sniff(path)
    if kind == "empty":
        raise CheckpointUnreadable(f"{path} is empty (0 bytes)", fix="the save was interrupted; use an earlier checkpoint")
    if trust and kind in ("zip", "legacy-torch", "pickle"):
        return load_with_torch(path, trusted=True)
    if kind == "zip":
        return read_zip(path)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "legacy-torch":
        return load_with_torch(path, trusted=False)
    if kind == "pickle":
        return read_pickle(path)
    if _looks_like_text(path):
        raise CheckpointUnreadable(f"{path} is a text file, not a checkpoint")
    raise CheckpointUnreadable(f"{path} is not a checkpoint (neither a torch zip archive, a pickle nor safetensors)",
                               fix="point at a file written by torch.save or safetensors")


def _looks_like_text(path: Path) -> bool:
    chunk = head(path, 4096)
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in chunk
