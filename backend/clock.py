"""The server's wall clock, which tests may move forward.

Retention and garbage collection act on ages of hours and days. A test cannot wait that
long, so when the environment names a file in CIRRUS_CLOCK_OFFSET_FILE, the number of
seconds in that file is added to the wall clock on every reading (a test edits the file to
let time pass, in the server and in admin commands alike). Without the variable this is
time.time_ns().
"""

import os
import time

OFFSET_FILE_VARIABLE = "CIRRUS_CLOCK_OFFSET_FILE"
_OFFSET_FILE = os.environ.get(OFFSET_FILE_VARIABLE)


def now_ns() -> int:
    """Nanoseconds since the epoch, plus the test offset when one is configured."""
    if _OFFSET_FILE is None:
        return time.time_ns()
    return time.time_ns() + _offset_ns(_OFFSET_FILE)


def _offset_ns(path: str) -> int:
    try:
        with open(path) as file:
            text = file.read().strip()
    except FileNotFoundError:
        return 0
    return int(float(text or 0) * 1e9)
