"""`.safetensors`: an 8-byte little-endian header length, a JSON header naming every tensor, then raw bytes.

Only the header is read; offsets are checked against the file size so a truncated copy is caught.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bevctl.ckpt.reader import ITEMSIZE, CheckpointUnreadable, Loaded, TensorInfo

DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "C64": "complex64",
}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


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
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointUnreadable(f"{path}: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointUnreadable(f"{path}: the safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    data_size = size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        try:
            dtype = DTYPES.get(entry["dtype"], str(entry["dtype"]).lower())
            shape = tuple(int(s) for s in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointUnreadable(f"{path}: safetensors entry {name!r} lacks dtype/shape/data_offsets") from None
        info = TensorInfo(dtype=dtype, shape=shape)
        if end > data_size or start > end:
            raise CheckpointUnreadable(f"{path} is truncated: tensor {name!r} ends at byte {end} of {data_size} data bytes")
        if dtype in ITEMSIZE and end - start != info.numel * ITEMSIZE[dtype]:
            raise CheckpointUnreadable(f"{path}: tensor {name!r} has {end - start} bytes for shape {list(shape)} {dtype}")
        tensors[name] = info
    if not tensors:
        raise CheckpointUnreadable(f"{path}: the safetensors file holds no tensors")
    return Loaded(obj=tensors, format="safetensors", size=size, meta={str(k): str(v) for k, v in dict(meta).items()})
