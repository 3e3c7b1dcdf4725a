"""A PNG encoder for 8-bit RGB images from the standard library (zlib), so TensorBoard images need no imaging
library in the CLI's environment."""

from __future__ import annotations

import struct
import zlib
from typing import Any


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(hwc_uint8: Any) -> tuple[bytes, int, int]:
    """(PNG bytes, height, width) of an H x W x 3 uint8 array (anything with `.shape` and `.tobytes()`)."""
    shape = tuple(hwc_uint8.shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {shape}")
    dtype = str(getattr(hwc_uint8, "dtype", "uint8"))
    if dtype != "uint8":
        raise ValueError(f"expected uint8 pixels, got {dtype}")
    height, width = shape[0], shape[1]
    pixels = hwc_uint8.tobytes()
    stride = width * 3
    rows = b"".join(b"\x00" + pixels[r * stride:(r + 1) * stride] for r in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 6)) + \
        _chunk(b"IEND", b"")
    return data, height, width
