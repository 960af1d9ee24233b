"""Keep freed feature maps for reuse instead of mapping fresh memory for each one.

glibc's allocator maps every block above its mmap threshold (128 KiB, raised as blocks are
freed up to 32 MiB) freshly from the kernel and unmaps it when it is freed, so every page of
such a block is faulted in again at first touch: each forward of a large batch pays a page
fault per 4 KiB of every feature map it allocates. On this project's machines (virtual
machines, where a fault is expensive) that was 30-50% of a ResNet-20 forward on 500 CIFAR
images, digital or analog (a 16-channel 32x32 map of 500 images is 33 MB, above the 32 MiB
ceiling). :func:`keep_freed_memory` raises the threshold and the heap's trim threshold, so
freed blocks stay in the process and the next forward reuses them, already mapped. The
numbers computed do not change (torch aligns its buffers to 64 bytes either way); the
process keeps up to :data:`TRIM_THRESHOLD` of freed memory instead of returning it.

The ``hwsim`` command calls it at start (and each Ray worker before its first task); set
``HWSIM_MALLOC=default`` to keep the allocator's defaults. A notebook can call it too.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 256 << 20  # blocks up to this size come from the heap (and go back to it)
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top kept before it is returned

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's allocator as described above, once per process; returns whether it is
    in effect (False: not glibc, or ``HWSIM_MALLOC=default``)."""
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("HWSIM_MALLOC", "") != "default" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None)  # the process's own C library
            except OSError:
                return False
            if not hasattr(libc, "gnu_get_libc_version"):  # glibc's parameters only
                return False
            mallopt = libc.mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                            and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
