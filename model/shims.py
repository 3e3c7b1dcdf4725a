"""Compatibility shims for third-party quirks. This is the only place for them; `import model` applies them.

spconv 2.3 (CPU wheel): the sparse-conv autograd functions ask `get_current_stream()` for a CUDA stream handle even
when every tensor is on the CPU, and that helper calls `torch.cuda.current_stream()`, which raises on a torch build
without CUDA. So forward works but backward fails. We replace the helper (it is imported by name into several spconv
modules, so each module's reference is swapped) with one that returns 0 -- spconv's "default stream" -- whenever CUDA
is unavailable, and defers to the original otherwise.

spconv 2.3 CPU sparse conv (gather -> mm -> scatter-add per kernel offset) returns WRONG values when torch runs
with more than one intra-op thread: on clustered LiDAR-like inputs ~15 % of outputs differ from a dense conv3d by
up to ~0.5, varying run to run (a race; one thread gives exact results). We run spconv's CPU conv/pool kernels with
one torch thread (restored afterwards); CUDA tensors are untouched. tests/test_model_core.py checks sparse convs
against dense `conv3d` with two threads.
"""

from __future__ import annotations

import functools
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


_SINGLE_THREAD_OPS = ("indice_conv", "indice_conv_backward", "fused_indice_conv", "indice_maxpool",
                      "indice_maxpool_backward")


def _single_threaded_on_cpu(fn):
    @functools.wraps(fn)
    def wrapper(features, *args, **kwargs):
        if getattr(features, "is_cuda", False) or torch.get_num_threads() == 1:
            return fn(features, *args, **kwargs)
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(features, *args, **kwargs)
        finally:
            torch.set_num_threads(n)

    wrapper.__bevctl_shim__ = True
    return wrapper


def patch_spconv_cpu_race() -> bool:
    try:
        ops = importlib.import_module("spconv.pytorch.ops")
    except ImportError:
        return False
    for name in _SINGLE_THREAD_OPS:
        fn = getattr(ops, name, None)
        if fn is not None and not getattr(fn, "__bevctl_shim__", False):
            setattr(ops, name, _single_threaded_on_cpu(fn))
    return True


def apply() -> None:
    global _applied
    if _applied:
        return
    patch_spconv_stream()
    patch_spconv_cpu_race()
    _applied = True
