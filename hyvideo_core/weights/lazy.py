"""Streaming tensors out of memory-mapped checkpoints with RAM bounded by one tensor.

A tensor read from a memory-mapped safetensors/GGUF file aliases the file's pages. Touching them
(to convert or copy) makes them part of the process's resident set, and they stay there while the
mapping lives, so a naive load ends with the file's pages *and* the converted model resident
(2x the file). After each tensor has been copied to its target, its source pages are handed back
with madvise(MADV_DONTNEED): for a read-only file mapping this only drops the process's mapping
of clean pages (the kernel can re-read them from the file), so it is safe even if the tensor is
used again. Peak RAM is then the loaded model plus about one source tensor.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys

import torch

from .reader import SafetensorsSource, ShardedSource, TensorSource

_MADV_DONTNEED = 4  # same value on Linux and macOS
_PAGE = mmap.PAGESIZE
_libc = None


def owned(tensor: torch.Tensor, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`tensor` converted to dtype/device in memory of its own (never aliasing the source)."""
    dtype = dtype or tensor.dtype
    out = tensor.to(device=device, dtype=dtype)
    if out.data_ptr() == tensor.data_ptr() and out.device == tensor.device:
        out = out.clone()
    return out


def is_mapped(source: TensorSource, key: str) -> bool:
    """True when `source.get(key)` returns a view of a read-only file mapping."""
    if isinstance(source, ShardedSource):
        owner = getattr(source, "_owner", {}).get(key)
        return owner is not None and is_mapped(owner, key)
    return isinstance(source, SafetensorsSource) or getattr(source, "memory_mapped", False)


def release_pages(tensor: torch.Tensor) -> None:
    """Drop this process's resident pages under a CPU tensor that views a read-only file mapping.

    Only call it for tensors from `is_mapped` sources. No-op where madvise is unavailable."""
    if tensor.device.type != "cpu" or tensor.numel() == 0 or not sys.platform.startswith(("linux", "darwin")):
        return
    libc = _load_libc()
    if libc is None:
        return
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first = (start + _PAGE - 1) // _PAGE * _PAGE  # pages wholly inside the tensor only:
    last = end // _PAGE * _PAGE                   # neighbours may still be needed
    if last > first:
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def _load_libc():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        except (OSError, AttributeError):
            _libc = False
    return _libc or None
