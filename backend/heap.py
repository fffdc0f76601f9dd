"""How the C library's allocator treats the large buffers that blocks pass through.

A block crosses several fresh buffers on its way (a request body, its zstd frame, the
plaintext, the sealed object; on the mount the fetched batch, the decoded block). With
glibc's defaults each buffer of a few hundred KiB or more is either mapped anew or taken
from memory just handed back to the system, so every page of it faults and is zeroed before
the copy into it starts: measured, framing or unframing a GiB in 512 KiB blocks took 0.8 CPU
s that way and 0.13 to 0.25 s from reused memory. Both processes therefore keep freed memory
for reuse: buffers up to 32 MiB come from the heap, and up to 64 MiB of free memory may stay
at the top of each of the allocator's arenas instead of being returned at once.
"""

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc <malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for this setting on 64-bit systems
TRIM_THRESHOLD = 64 << 20


def reuse_freed_buffers() -> bool:
    """Set the allocator's thresholds; False where the C library has no mallopt or refuses
    a value (musl, other systems), which then keeps its own behaviour for that setting."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = done and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.debug("the C library kept its allocation thresholds")
    return done
