"""Large request buffers reused from the heap instead of mapped afresh (glibc's malloc).

glibc gives an allocation over its mmap threshold its own mapping, and trims free memory
off the heap's top past its trim threshold; both move with what was freed last. A long
request's buffers (a 3.3 MB JSON body arriving in 256 KiB pieces, joined, cut and decoded
in another thread) kept landing on fresh pages: ~5 ms of the event loop's CPU per 10,000-
step predict went to page faults (docs/benchmarks.md, issue 9). Fixed thresholds above
any body keep such buffers on the heap and the heap's free top for the next request.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Allocations below this come from the heap: above `max_body_bytes` (16 MiB) and glibc's
# own ceiling for the dynamic threshold (32 MiB on 64-bit).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# Free memory at the heap's top kept for reuse, up to this.
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024


def reuse_large_buffers() -> bool:
    """Set the thresholds; False where the C library has no glibc `mallopt` (musl)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
