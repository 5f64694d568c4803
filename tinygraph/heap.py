"""glibc's heap, set for a training process: freed memory is kept for the next step.

A training step allocates and frees the same tensors every step, many of them a few MB.
glibc's malloc serves a block above its mmap threshold with a fresh mapping, and gives the
top of its heap back to the kernel whenever more than its trim threshold lies free there;
both thresholds start at 128 KB and rise only as large blocks happen to be freed. How far
they rise depends on the process's history, and where they stay low every step regrows the
heap into fresh pages, each zeroed by the kernel on first touch: alone in its process a
baby step of tinygraph took 3,000-6,800 page faults and 45-48 ms, against none and 35-42 ms
with the heap kept (torch's step: 150-1,300 faults; docs/performance.md).
`keep_freed_memory` fixes both thresholds high. (PyTorch's CPU tuning
guide suggests swapping in jemalloc or tcmalloc for the same reason: memory reused, not
returned and faulted in again.)

The trainer and tools/bench.py (for both of its sides) call it; a program of your own can
too. It is a setting of the whole process, not of tinygraph: the resident set stays at the
heap's peak (which training reaches every step anyway) instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
KEEP_FREE = 2**30  # free bytes at the heap's top that stay the process's
LARGEST_FROM_HEAP = 2**25  # 32 MB, the documented maximum (older glibc refuses more); larger blocks are mapped


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed memory in the process's heap (glibc: blocks up to 32 MB come from the heap,
    and up to 1 GB free at its top stays there) so that every training step reuses the
    memory of the one before. Returns whether it could: False where the C library is not
    glibc (macOS, musl, Windows), where the default is left as it is. (Under a preloaded
    jemalloc or tcmalloc glibc's settings are accepted and do nothing; those keep memory anyway.)"""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # TypeError: Windows, where CDLL wants a name
        return False
    # (one after the other: where the first is refused, nothing has changed)
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST_FROM_HEAP)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE))
