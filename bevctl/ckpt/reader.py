"""Read a checkpoint's tensor names, dtypes and shapes without torch and without running code from the file.

A `torch.save` file is a zip archive whose `data.pkl` is a pickle of the saved object; tensor bytes live in
separate `data/<key>` entries that are only referenced through `persistent_load`. We unpickle `data.pkl` with a
`find_class` that maps the handful of symbols torch emits for tensors and containers to inert records, so
nothing named in the file is ever imported or called, and no tensor data is read. Any other global is refused
with the full list of offending names (a `--trust` load with torch is the explicit escape hatch).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from bevctl.ckpt.types import ITEMSIZE, CheckpointUnreadable, Loaded, TensorInfo

__all__ = ["CheckpointUnreadable", "Loaded", "TensorInfo", "ITEMSIZE", "read_zip", "read_pickle", "restricted_loads"]

ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (pre-1.6) format starts with a pickled magic number 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."

_DTYPE_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32", "short": "int16",
    "cfloat": "complex64", "cdouble": "complex128",
}
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": None,
}


# ------------------------------------------------------------------------------------------ inert records


class _Storage:
    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key: str, dtype: str | None, numel: int):
        self.key = key
        self.dtype = dtype  # None for UntypedStorage (the dtype comes with _rebuild_tensor_v3)
        self.numel = numel


class _StorageType:
    __slots__ = ("dtype",)

    def __init__(self, dtype: str | None):
        self.dtype = dtype


class _DType:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class Opaque:
    """Stands in for any object of a refused global so unpickling can finish and list every offender."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class NumpyArray(Opaque):
    """numpy arrays (e.g. numpy RNG state) are described, never rebuilt."""


def _canonical_dtype(name: str) -> str:
    return _DTYPE_ALIASES.get(name, name)


def _rebuild_tensor_v2(seen, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return _tensor(seen, storage, offset, size, stride, storage.dtype if isinstance(storage, _Storage) else None)


def _rebuild_tensor_v3(seen, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    return _tensor(seen, storage, offset, size, stride, dtype.name if isinstance(dtype, _DType) else None)


def _tensor(seen: list, storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None) -> TensorInfo:
    if not isinstance(storage, _Storage) or dtype is None:
        raise pickle.UnpicklingError("a tensor without a storage reference")
    shape = tuple(int(s) for s in size)
    info = TensorInfo(dtype=dtype, shape=shape)
    seen.append((info, storage, int(offset), tuple(int(s) for s in stride)))
    return info


def _rebuild_parameter(data, requires_grad=True, hooks=None, state=None):
    if isinstance(data, TensorInfo):
        data.is_param = True  # the same record: its storage location is filled in after unpickling
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


def _rebuild_meta_tensor_no_storage(dtype, size, stride, requires_grad=False):
    return TensorInfo(dtype.name if isinstance(dtype, _DType) else "unknown", tuple(int(s) for s in size))


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"); only plain encodings are honoured.
    if not isinstance(text, str) or encoding.lower() not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise pickle.UnpicklingError("unexpected _codecs.encode call")
    return text.encode(encoding)


def _passthrough_type(*args: Any) -> Any:
    return None


class _Str(str):
    """torch.__version__ is a str subclass (TorchVersion); keep the text, drop the type."""

    def __setstate__(self, state: Any) -> None:
        pass


def _size(*args: Any) -> tuple:
    return tuple(args[0]) if args else ()


_SAFE: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): _rebuild_meta_tensor_no_storage,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _passthrough_type,
    ("torch.nn.parameter", "Parameter"): _passthrough_type,
    ("torch", "Size"): _size,
    ("torch.torch_version", "TorchVersion"): _Str,
    ("torch", "device"): lambda *a: ":".join(str(x) for x in a),
    ("torch", "strided"): "strided",
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _codecs_encode,
}
for _np in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _SAFE[(_np, "_reconstruct")] = NumpyArray
    _SAFE[(_np, "scalar")] = NumpyArray
_SAFE[("numpy", "ndarray")] = NumpyArray
_SAFE[("numpy", "dtype")] = NumpyArray


class RestrictedUnpickler(pickle.Unpickler):
    """Maps only known tensor/container symbols; records every other global as refused (never imported)."""

    def __init__(self, file: Any):
        super().__init__(file)
        self.refused: list[str] = []
        self.tensors: list = []  # (TensorInfo, storage, offset, stride) to check storage sizes afterwards
        self._own = {
            ("torch._utils", "_rebuild_tensor_v2"): lambda *a: _rebuild_tensor_v2(self.tensors, *a),
            ("torch._utils", "_rebuild_tensor_v3"): lambda *a: _rebuild_tensor_v3(self.tensors, *a),
        }

    def find_class(self, module: str, name: str) -> Any:
        found = self._own.get((module, name)) or _SAFE.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage", "_LegacyStorage"):
            return _StorageType(None)
        if module == "torch" and _canonical_dtype(name) in ITEMSIZE:
            return _DType(_canonical_dtype(name))
        if module.startswith("numpy.dtypes") and name.endswith("DType"):
            return NumpyArray
        symbol = f"{module}.{name}"
        if symbol not in self.refused:
            self.refused.append(symbol)
        return type("Refused", (Opaque,), {"symbol": symbol})

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            typ, key, _location, numel = pid[1:5]
            dtype = typ.dtype if isinstance(typ, _StorageType) else None
            if isinstance(typ, type) and issubclass(typ, Opaque):
                return Opaque()
            return _Storage(str(key), dtype, int(numel))
        raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:60]!r}")


def restricted_loads(data: bytes) -> tuple[Any, list[str], list]:
    """Unpickle `data` inertly: (object, refused globals, [(TensorInfo, storage, offset, stride)])."""
    unpickler = RestrictedUnpickler(io.BytesIO(data))
    try:
        obj = unpickler.load()
    except RecursionError:
        raise CheckpointUnreadable("the pickle nests too deeply to be a checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - any pickle damage is "unreadable", not a crash
        if unpickler.refused:
            raise _refusal(unpickler.refused) from None
        raise CheckpointUnreadable(f"damaged pickle: {type(exc).__name__}: {str(exc)[:120]}") from None
    return obj, unpickler.refused, unpickler.tensors


def _refusal(symbols: list[str]) -> CheckpointUnreadable:
    shown = ", ".join(symbols[:8]) + (f" (+{len(symbols) - 8} more)" if len(symbols) > 8 else "")
    return CheckpointUnreadable(
        f"refused to unpickle: the file names globals that are not tensors or containers: {shown}",
        fix="only if you trust where the file came from, re-run with --trust (loads it with torch, weights_only=False)",
    )


# ------------------------------------------------------------------------------------------ formats

# A torch zip stores tensors uncompressed; anything that inflates far beyond its compressed size is not one.
MAX_RATIO = 50
MAX_INDEX_BYTES = 256 << 20  # data.pkl: the index of tensors and containers, a few MB even for huge models


def read_zip(path: Path) -> Loaded:
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise CheckpointUnreadable(
            f"{path} is damaged: a zip checkpoint without its central directory (truncated or partly copied?)",
            fix="copy the file again or use an earlier checkpoint",
        ) from None
    with archive:
        infos = {i.filename: i for i in archive.infolist()}
        pickles = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pickles:
            raise CheckpointUnreadable(f"{path} is a zip archive but not a torch checkpoint (no data.pkl)")
        pkl = min(pickles, key=len)
        root = pkl[: -len("data.pkl")]
        _check_sizes(path, size, infos, pkl)
        try:
            with archive.open(pkl) as fh:
                data = fh.read(MAX_INDEX_BYTES + 1)  # never more than the cap, whatever the directory claims
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise CheckpointUnreadable(f"{path} is damaged: cannot read data.pkl ({exc})") from None
        if len(data) > MAX_INDEX_BYTES:
            raise CheckpointUnreadable(f"{path}: data.pkl inflates past {MAX_INDEX_BYTES >> 20} MB; not a checkpoint index")
        obj, refused, tensors = restricted_loads(data)
        if refused:
            raise _refusal(refused)
        _check_storages(path, root, infos, tensors)
    return Loaded(obj=obj, format="zip", size=size)


def _check_sizes(path: Path, size: int, infos: dict[str, zipfile.ZipInfo], pkl: str) -> None:
    """Refuse zip bombs and cut copies from the directory alone, before a byte is inflated."""
    total = 0
    for info in infos.values():
        # local header (30 bytes + name) + data must lie inside the file; catches cut or zero-filled copies
        if info.header_offset + 30 + len(info.filename) + info.compress_size > size:
            raise CheckpointUnreadable(f"{path} is damaged: entry {info.filename} runs past the end of the file")
        if info.file_size > MAX_RATIO * info.compress_size + 4096:
            raise CheckpointUnreadable(
                f"{path}: entry {info.filename} inflates {info.file_size} bytes from {info.compress_size} "
                "(a zip bomb, not a checkpoint); refused without unpacking",
                fix="torch.save writes tensors uncompressed; re-save the weights with torch.save",
            )
        total += info.file_size
    if total > MAX_RATIO * size + (1 << 20):
        raise CheckpointUnreadable(f"{path}: the archive claims {total} unpacked bytes from a {size}-byte file; refused")
    if infos[pkl].file_size > MAX_INDEX_BYTES:
        raise CheckpointUnreadable(f"{path}: data.pkl is {infos[pkl].file_size} bytes, too large to be a checkpoint index")


def _check_storages(path: Path, root: str, infos: dict[str, zipfile.ZipInfo], tensors: list) -> None:
    """Every tensor's bytes must exist in its storage entry (sizes from the zip directory; no data read).
    Records where each tensor's bytes are (`TensorInfo.where`) for the finite check."""
    for info, storage, offset, stride in tensors:
        member = f"{root}data/{storage.key}"
        entry = infos.get(member)
        if entry is None:
            raise CheckpointUnreadable(f"{path} is damaged: storage data/{storage.key} is missing from the archive")
        item = ITEMSIZE.get(info.dtype, 1)
        extent = 0 if any(s == 0 for s in info.shape) else 1 + sum((s - 1) * st for s, st in zip(info.shape, stride))
        needed = (offset + extent) * item if extent else 0
        if entry.file_size < needed:
            raise CheckpointUnreadable(
                f"{path} is damaged: storage data/{storage.key} holds {entry.file_size} bytes, tensor needs {needed}"
            )
        info.where = (member, offset * item, extent * item)


def read_pickle(path: Path) -> Loaded:
    """A bare pickle (not torch's format): read inertly, so unsafe ones are refused without running."""
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise CheckpointUnreadable(f"{path} is a {size}-byte bare pickle; not a torch checkpoint")
    obj, refused, _ = restricted_loads(path.read_bytes())
    if refused:
        raise _refusal(refused)
    return Loaded(obj=obj, format="pickle", size=size)
