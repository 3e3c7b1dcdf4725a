"""The records every checkpoint reader produces (the lowest layer of `bevctl.ckpt`: it imports nothing of it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bevctl.errors import UsageError

ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1, "complex64": 8, "complex128": 16,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
}
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


class CheckpointUnreadable(UsageError):
    """Unreadable, unsafe or not a checkpoint: exit 2, one line (with a fix, a generic one when none is given)."""

    DEFAULT_FIX = "point at a checkpoint written by torch.save or safetensors, or copy the file again"

    def __init__(self, message: str, fix: str | None = None, code: int | None = None):
        super().__init__(message, fix=fix or self.DEFAULT_FIX, code=code)


class TensorInfo:
    """What the checks need from a tensor: never its values, but where its bytes are, so the finite check can
    read them on demand. (A slotted class: thousands are made per file.)

    `where` is `(member, start, length)`: the zip member (None: the file itself) and the byte range that holds
    the tensor's elements (its whole extent when it is a strided view)."""

    __slots__ = ("dtype", "shape", "is_param", "where", "nonfinite")

    def __init__(self, dtype: str, shape: tuple[int, ...], is_param: bool = False,
                 where: tuple[str | None, int, int] | None = None, nonfinite: int | None = None):
        self.dtype = dtype
        self.shape = shape
        self.is_param = is_param
        self.where = where
        self.nonfinite = nonfinite  # counted already (files loaded with torch)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorInfo) and (self.dtype, self.shape) == (other.dtype, other.shape)

    def __hash__(self) -> int:
        return hash((self.dtype, self.shape))

    def __repr__(self) -> str:
        return f"TensorInfo({self.dtype}, {list(self.shape)})"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Loaded:
    """The saved object with tensors replaced by `TensorInfo`, and where it came from."""

    obj: Any
    format: str  # "zip" | "safetensors" | "pickle" | "legacy-torch" | "trusted-torch"
    size: int
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # format-level metadata (safetensors __metadata__)
