"""The allocator keeps freed block-sized buffers for reuse (backend/heap.py).

Page faults are the kernel's own count of what the setting saves: a buffer taken from memory
the process kept costs none, one mapped anew costs one per page.
"""

import subprocess
import sys

import pytest

from backend.heap import reuse_freed_buffers

# A child that handles batches of 16 blocks of 512 KiB as the server does (all of a batch's
# buffers alive together, then all freed) and prints the minor page faults that cost after
# the first batch; with `reuse` it first sets the thresholds as the server and mount do.
CHILD = """
import resource, sys
from backend.heap import reuse_freed_buffers
if sys.argv[1] == "reuse":
    assert reuse_freed_buffers()
def batch():
    return [bytearray(512 << 10) for _ in range(16)]
batch()  # the first one always faults in
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(32):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(not reuse_freed_buffers(), reason="the C library has no mallopt")
def test_freed_buffers_are_reused_instead_of_faulting_in_again() -> None:
    default, reused = faults("default"), faults("reuse")
    # 32 batches of 16 blocks of 128 pages: by default the freed batch goes back to the system.
    assert default > 32 * 16 * 128 // 2, default
    assert reused < default // 20, (reused, default)
