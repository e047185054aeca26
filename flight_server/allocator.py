"""The C allocator's settings for a process that streams query results as Arrow batches.

DuckDB builds each Arrow batch it exports in buffers from the C allocator (malloc), grows them by
realloc while the batch fills, and frees them once the batch is sent. With glibc's defaults a freed
buffer of a few MiB is handed back to the kernel at once (the arena is trimmed, or the dynamic mmap
threshold sends the next one to a fresh mmap), so every batch of a big read pays for page faults and
for zeroing pages again: a third of the server's CPU for a whole-dataset DoGet, measured. Keeping freed
memory in the process, up to a bound, lets the next batch reuse the same pages.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger("flightcast.allocator")

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Allocations under this come from the heap, and are reused once freed; bigger ones are mmapped and returned
# whole when freed. Setting it also turns off glibc's dynamic threshold, which otherwise drifts up to the
# largest block freed so far. A batch's buffers are a few MiB (DuckDB's row groups: 122,880 rows).
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of a heap kept for reuse rather than trimmed: a few batches' worth.
TRIM_THRESHOLD = 128 << 20


def retain_freed_memory() -> bool:
    """Keep freed blocks of up to MMAP_THRESHOLD for reuse (glibc only); True when the settings took."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    taken = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not taken:
        log.warning("the C allocator refused its settings; big reads fault in fresh pages for every batch")
    return taken
