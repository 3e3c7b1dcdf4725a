"""`.safetensors`: an 8-byte little-endian header length, a JSON header naming every tensor, then raw bytes.

Only the header is read; offsets are checked against the file size so a truncated copy is caught. The header is
size- and depth-checked before it is parsed (a real one nests three levels), so a hostile one cannot exhaust
memory or the parser's recursion.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bevctl.ckpt.types import ITEMSIZE, CheckpointUnreadable, Loaded, TensorInfo

DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "C64": "complex64",
}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit
MAX_DEPTH = 8  # {name: {"shape": [..]}} is three deep
_BRACKETS = str.maketrans("", "", "".join(chr(c) for c in range(128) if chr(c) not in "[]{}"))


def _depth(text: str) -> int:
    """Deepest bracket nesting outside JSON strings (strings removed first; C-speed translate, then one pass)."""
    import re

    skeleton = re.sub(r'"(?:[^"\\]|\\.)*"', "", text).translate(_BRACKETS)
    depth = deepest = 0
    for ch in skeleton:
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        else:
            depth -= 1
    return deepest


def read_safetensors(path: Path) -> Loaded:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) < 8:
            raise CheckpointUnreadable(f"{path} is too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > MAX_HEADER or 8 + header_len > size:
            raise CheckpointUnreadable(f"{path}: safetensors header length {header_len} does not fit the file ({size} bytes)")
        raw = fh.read(header_len)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointUnreadable(f"{path}: the safetensors header is not UTF-8 JSON") from None
    if _depth(text) > MAX_DEPTH:
        raise CheckpointUnreadable(f"{path}: the safetensors header nests deeper than {MAX_DEPTH} levels; not a "
                                   "safetensors file", fix="point at a file written by safetensors")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointUnreadable(f"{path}: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointUnreadable(f"{path}: the safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        meta = {}
    data_size = size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise CheckpointUnreadable(f"{path}: safetensors entry {name!r} is not an object")
        try:
            dtype = DTYPES.get(entry["dtype"], str(entry["dtype"]).lower())
            shape = tuple(int(s) for s in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointUnreadable(f"{path}: safetensors entry {name!r} lacks dtype/shape/data_offsets") from None
        info = TensorInfo(dtype=dtype, shape=shape, where=(None, 8 + header_len + start, end - start))
        if end > data_size or start > end:
            raise CheckpointUnreadable(f"{path} is truncated: tensor {name!r} ends at byte {end} of {data_size} data bytes")
        if dtype in ITEMSIZE and end - start != info.numel * ITEMSIZE[dtype]:
            raise CheckpointUnreadable(f"{path}: tensor {name!r} has {end - start} bytes for shape {list(shape)} {dtype}")
        tensors[name] = info
    if not tensors:
        raise CheckpointUnreadable(f"{path}: the safetensors file holds no tensors")
    return Loaded(obj=tensors, format="safetensors", size=size, meta={str(k): str(v) for k, v in dict(meta).items()})
