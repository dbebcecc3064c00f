"""Process-level CPU settings that make training pleasant on a laptop CPU.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it with ``munmap`` when freed. A PixelCNN's logits for a batch of 64 28x28
images are 51 MB, so every training step would fault in and zero those pages again, several times,
which slows a PixelCNN step markedly on a small CPU. Raising the mmap and trim thresholds keeps
such buffers in the heap, where they are reused from step to step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_large_allocations_in_heap(threshold_bytes: int = 1 << 30) -> bool:
    """Ask glibc to serve allocations below ``threshold_bytes`` from the reusable heap.

    Returns True when the setting was applied (glibc on Linux), False elsewhere. Safe to call
    more than once.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, int(2 * threshold_bytes - 1)) == 1
    return ok_mmap and ok_trim
