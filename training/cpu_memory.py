"""Keep freed CPU memory inside the process, so a CPU training step stops page-faulting its activations in afresh.

glibc hands large freed blocks back to the OS (``munmap``, heap trimming); the next step asks for the same sizes again
and the kernel zero-fills them page by page. For the UNet of benchmarks/train_throughput.py that is about 30,000
minor page faults per step. Raising glibc's mmap and trim thresholds (``mallopt``) keeps those blocks for reuse, at
the price of a higher resident size. The setting is process-wide and has no effect off glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit: 4 * 1024 * 1024 * sizeof(long)


def retain_freed_memory(trim_threshold: int = 1 << 30, top_pad: int = 64 << 20) -> bool:
    """Serve allocations up to 32 MiB from the heap and keep up to `trim_threshold` bytes of freed memory.

    Returns False where this does not apply (no glibc ``mallopt``); True once glibc accepted every setting.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX),
        (M_TRIM_THRESHOLD, trim_threshold),
        (M_TOP_PAD, top_pad),
    )
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
