"""Count NaN/inf values in a checkpoint's float tensors by reading their bytes, without torch or numpy.

A value is non-finite exactly when its exponent bits are all ones. Per lane (one element), `(bits & EXP) + INC`
carries into the sign bit only then, and no lane can carry into the next (the sign bit was masked off), so one
big-integer AND/ADD/AND over a chunk and `bit_count()` count the non-finite elements at C speed. A cheaper test on
the top bytes skips that for the (usual) chunks that cannot hold one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable

from bevctl.ckpt.types import CheckpointUnreadable, TensorInfo

# dtype -> (bytes per element, exponent mask, lowest exponent bit, sign bit)
LANES = {
    "float32": (4, 0x7F800000, 0x00800000, 0x80000000),
    "float16": (2, 0x7C00, 0x0400, 0x8000),
    "bfloat16": (2, 0x7F80, 0x0080, 0x8000),
    "float64": (8, 0x7FF0000000000000, 0x0010000000000000, 0x8000000000000000),
}
CHUNK = 8 << 20  # bytes per pass: bounded memory on multi-GB tensors


# A non-finite value's top byte has these exponent bits set (float32/bfloat16/float64: sign + 7 exponent bits;
# float16: sign + 5 exponent bits + 2 mantissa bits). Real weights almost never do, so a strided slice of the top
# bytes and a few substring searches (memchr speed) clear a chunk; only chunks with candidates get the exact count.
_CANDIDATES = {dtype: [bytes([b]) for b in range(256) if (b & mask) == mask]
               for dtype, mask in (("float32", 0x7F), ("bfloat16", 0x7F), ("float64", 0x7F), ("float16", 0x7C))}


def _may_hold_nonfinite(data: bytes, dtype: str) -> bool:
    size = LANES[dtype][0]
    tops = data[size - 1:: size]
    return any(byte in tops for byte in _CANDIDATES[dtype])


def count_bytes(data: bytes, dtype: str) -> int:
    """Non-finite elements among little-endian `dtype` values in `data`."""
    size, exp, inc, sign = LANES[dtype]
    n = len(data) // size
    if not n:
        return 0
    if not _may_hold_nonfinite(data[: n * size], dtype):
        return 0
    x = int.from_bytes(data[: n * size], "little")

    def lanes(value: int) -> int:
        return int.from_bytes(value.to_bytes(size, "little") * n, "little")

    return (((x & lanes(exp)) + lanes(inc)) & lanes(sign)).bit_count()


def _count_range(fh, start: int, length: int, dtype: str) -> int:
    """Non-finite values among the `length` bytes at `start` of the open file (or in-memory stream) `fh`."""
    size = LANES[dtype][0]
    step = CHUNK - CHUNK % size
    fh.seek(start)
    bad = 0
    while length > 0:
        data = fh.read(min(step, length))
        if not data:
            break
        bad += count_bytes(data, dtype)
        length -= len(data)
    return bad


def count_nonfinite(path: Path, tensors: Iterable[tuple[str, TensorInfo]]) -> dict[str, int]:
    """key -> non-finite values for every float tensor whose bytes can be located (others are skipped)."""
    out: dict[str, int] = {}
    by_member: dict[str | None, list[tuple[str, TensorInfo]]] = {}
    for key, info in tensors:
        if info.nonfinite is not None:
            out[key] = info.nonfinite
        elif info.dtype in LANES and info.where is not None:
            by_member.setdefault(info.where[0], []).append((key, info))
    if not by_member:
        return out
    plain = by_member.pop(None, [])
    with open(path, "rb") as fh:
        for key, info in plain:
            out[key] = _count_range(fh, info.where[1], info.where[2], info.dtype)
        if not by_member:
            return out
        with zipfile.ZipFile(path) as archive:
            for member, items in by_member.items():
                entry = archive.getinfo(member)
                if entry.compress_type != zipfile.ZIP_STORED:  # not torch.save's layout: let zipfile inflate it
                    with archive.open(member) as inflated:
                        for key, info in items:
                            out[key] = _count_range(inflated, info.where[1], info.where[2], info.dtype)
                    continue
                # torch stores tensors uncompressed: read them in place (zipfile's reader would CRC every byte)
                fh.seek(entry.header_offset)
                local = fh.read(30)
                if local[:4] != b"PK\x03\x04":
                    raise CheckpointUnreadable(f"{path} is damaged: no local header for {member}")
                base = entry.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
                for key, info in sorted(items, key=lambda item: item[1].where[1]):
                    out[key] = _count_range(fh, base + info.where[1], info.where[2], info.dtype)
    return out
