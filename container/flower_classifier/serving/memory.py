"""The process's memory allocator: glibc malloc tuned for loading, then for serving, and its
heap trimmed after the warm-up. Nothing here on a libc that is not glibc.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters


def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc: nothing to tune


def tune_malloc(serving: bool) -> None:
    """glibc malloc, in two phases. Loading: every big buffer is its own mapping, so the fp32
    weights and warm-up tensors that loading frees go back to the OS. Serving: buffers up to
    32 MiB (activations, decoded photos) are reused from the heap, where a fresh mapping per
    activation would cost a page fault per 4 KiB on every forward. One arena in both, not one
    per request thread. The measurements: bench/RESULTS.md, "Allocator settings"."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20 if serving else 256 << 10)
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20 if serving else 16 << 20)


def trim_heap() -> None:
    """Give the heap's free pages back to the OS, once."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
