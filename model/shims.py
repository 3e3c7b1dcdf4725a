"""Compatibility shims for third-party quirks. This is the only place for them; `import model` applies them.

spconv 2.3 (CPU wheel): the sparse-conv autograd functions ask `get_current_stream()` for a CUDA stream handle even
when every tensor is on the CPU, and that helper calls `torch.cuda.current_stream()`, which raises on a torch build
without CUDA. So forward works but backward fails. We replace the helper (it is imported by name into several spconv
modules, so each module's reference is swapped) with one that returns 0 -- spconv's "default stream" -- whenever CUDA
is unavailable, and defers to the original otherwise.
"""

from __future__ import annotations

import importlib

import torch

_SPCONV_MODULES = ("spconv.pytorch.cppcore", "spconv.pytorch.ops", "spconv.pytorch.hash")
_applied = False


def _cpu_safe_stream(original):
    def get_current_stream():
        if not torch.cuda.is_available():
            return 0
        return original()

    get_current_stream.__wrapped__ = original
    return get_current_stream


def patch_spconv_stream() -> bool:
    """Swap spconv's `get_current_stream` for a CPU-safe one. Returns False when spconv is not installed."""
    try:
        cppcore = importlib.import_module("spconv.pytorch.cppcore")
    except ImportError:
        return False
    original = getattr(cppcore.get_current_stream, "__wrapped__", cppcore.get_current_stream)
    patched = _cpu_safe_stream(original)
    for name in _SPCONV_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "get_current_stream"):
            mod.get_current_stream = patched
    return True


def apply() -> None:
    global _applied
    if _applied:
        return
    patch_spconv_stream()
    _applied = True
