"""Keep freed activation buffers in the process, so CPU timings measure compute, not page faults.

glibc's ``malloc`` serves every large buffer (above a threshold that adapts to what was
last freed, at most 32 MiB by default) with fresh pages from the OS and gives them back
when it is freed; the next buffer then faults in every page again on first touch. With
batch 64 that made a depthwise convolution 2.9x slower (MobileNetV2, 108 channels at
32x32: 25.6 ms against 8.9 ms) and a whole MobileNetV2 forward pass 1.7x slower (135,000
page faults per pass), ``experiments/results/allocator.md``. Worse for a latency model,
how much a layer pays depends on which buffers the process freed before it, so layers
timed alone disagreed with the same layers inside the network (Spearman 0.74 between
tables and measurement for MobileNetV2 at batch 64, 0.98 with buffers kept;
``latency_model.md``). Raising the mmap and trim thresholds keeps freed buffers in the
heap for reuse, which is what jemalloc and tcmalloc do; PyTorch's CPU performance tuning
guide recommends those allocators for this reason. Training steps barely change (1-2%).

The price: the process keeps its peak heap instead of returning it to the OS (the peak
itself was unchanged in ``allocator.md``). Set
``AUTOPRUNE_KEEP_FREED_MEMORY=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # buffers below 1 GiB come from the heap and are reused
_TRIM_THRESHOLD = 2**31 - 1  # never shrink the heap

_state: str | None = None


def keep_freed_memory() -> str:
    """Switch this process's allocator to keep freed buffers (once); say what the allocator is.

    Returns ``"glibc, buffers kept"`` when the thresholds were raised, otherwise why not
    (another C library, switched off by the environment, or ``mallopt`` refused); the
    answer is recorded with every latency so measurements are compared only when taken
    alike."""
    global _state
    if _state is None:
        _state = _switch()
    return _state


def _switch() -> str:
    if os.environ.get("AUTOPRUNE_KEEP_FREED_MEMORY", "1") == "0":
        return "default (AUTOPRUNE_KEEP_FREED_MEMORY=0)"
    if not sys.platform.startswith("linux"):
        return "default (not glibc)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default (not glibc)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) != 1:
        return "default (mallopt refused)"
    return "glibc, buffers kept"
