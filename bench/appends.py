"""Workload 9: a log written line by line with an fsync after every line.

Databases' write-ahead logs and loggers that must not lose a line write this way: many small
appends, each made durable before the next. Reported: lines per second (write + fsync of
each), the 99th percentile of one line's write + fsync, and how long after the last line
the backend holds the whole file.
"""

import os
import time

from bench.context import Bench
from bench.stats import median, percentile
from bench.targets import Target

WORKLOAD = "9 small appends"


def run(bench: Bench) -> None:
    for target in bench.targets:
        try:
            measure(bench, target)
        except Exception as exc:
            bench.table.note(f"{target.name}: small-appends workload failed: {exc}")


def line(number: int) -> bytes:
    """A log line of about 65 bytes, different every time."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp} INFO worker-{number % 8} request {number} served in 12 ms\n".encode()


def append_lines(path: os.PathLike, count: int) -> tuple[list[float], int]:
    """Seconds each line's write + fsync took, and the bytes written."""
    took, size = [], 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for number in range(count):
            data = line(number)
            start = time.perf_counter()
            os.write(fd, data)
            os.fsync(fd)
            took.append(time.perf_counter() - start)
            size += len(data)
    finally:
        os.close(fd)
    return took, size


def measure(bench: Bench, target: Target) -> None:
    count = bench.sizes.append_lines
    rates, tails, lags = [], [], []
    for i in range(bench.runs):
        path = target.root / f"append-{i}.log"
        took, size = append_lines(path, count)
        rates.append(count / sum(took))
        tails.append(percentile(took, 99) * 1000)
        lags.append(target.wait_synced({path.name: size}, bench.sizes.sync_timeout))
        path.unlink()
    table = bench.table
    table.record(WORKLOAD, f"{count:,} lines, fsync each", "lines/s", target.name, median(rates))
    table.record(WORKLOAD, "one line's write + fsync, p99", "ms", target.name, median(tails), False)
    table.record(
        "3 in sync",
        f"{count:,} appended lines: backend has them after",
        "s",
        target.name,
        median(lags),
        higher_better=False,
    )
    target.settle()
