"""Keeping freed memory in the process on Linux, where glibc's defaults cost the CPU runs dearly.

A training step frees and re-allocates the same tens of megabytes of activations every step. glibc
returns them to the kernel (large blocks are mapped and unmapped one by one; the top of the heap is
trimmed as soon as a few blocks are free), so each step page-faults its memory back in: 15 of the
37 s of `cnn/train_cnn.py` were kernel time. Serving every block from the heap and trimming only
beyond 1 GiB free removes that (28 s, identical weights): the memory stays with the process for the
next step, which is what a training loop wants. Elsewhere (macOS, musl, Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Tells glibc's malloc to keep freed memory for reuse (module docstring); True when it applied.
    Once per process, before the heavy work; blocks that no heap can hold are still mapped (glibc
    falls back to the main heap, then to mapping)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's is a stub that returns 0.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
