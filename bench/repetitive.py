"""Workload 8: content that repeats, which dedup and compression should make cheaper.

Zero-filled files (sparse images, preallocated databases), a 64 KiB pattern written over and
over (what fio writes without `--refill_buffers`, VM images, logs) and, as the reference,
fresh random data: the same size each, written by this process in 1 MiB writes and fsynced.
The rate counts only the time spent inside write() and fsync(), so making the random data
does not slow that column; the harness then waits until the backend holds the file.
"""

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.context import Bench
from bench.stats import median
from bench.targets import Target

WORKLOAD = "8 repeated content"
WRITE = 1 << 20
PATTERN = 64 * 1024

Source = Callable[[int], Iterator[bytes]]


def zeros(size: int) -> Iterator[bytes]:
    buffer = bytes(WRITE)
    for _ in range(size // WRITE):
        yield buffer


def pattern(size: int) -> Iterator[bytes]:
    """One random 64 KiB pattern, the same in every run, repeated."""
    buffer = random.Random(64).randbytes(PATTERN) * (WRITE // PATTERN)
    for _ in range(size // WRITE):
        yield buffer


def fresh(size: int) -> Iterator[bytes]:
    """Random data never written before: nothing to dedup or compress."""
    for _ in range(size // WRITE):
        yield os.urandom(WRITE)


SOURCES: dict[str, Source] = {
    "zero-filled": zeros,
    "64 KiB pattern repeated": pattern,
    "random (reference)": fresh,
}


def run(bench: Bench) -> None:
    for target in bench.targets:
        try:
            measure(bench, target)
        except Exception as exc:
            bench.table.note(f"{target.name}: repeated-content workload failed: {exc}")


def write_timed(path: Path, chunks: Iterator[bytes]) -> float:
    """Seconds spent in write() and the final fsync() of a new file made of `chunks`."""
    spent = 0.0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in chunks:
            start = time.perf_counter()
            os.write(fd, chunk)
            spent += time.perf_counter() - start
        start = time.perf_counter()
        os.fsync(fd)
        spent += time.perf_counter() - start
    finally:
        os.close(fd)
    return spent


def measure(bench: Bench, target: Target) -> None:
    size = bench.sizes.repeat_bytes
    label = f"{size >> 20} MiB"
    for kind, source in SOURCES.items():
        rates, lags = [], []
        for i in range(bench.runs):
            path = target.root / f"repeat-{i}.bin"
            rates.append(size / write_timed(path, source(size)) / 1e6)
            lags.append(target.wait_synced({path.name: size}, bench.sizes.sync_timeout))
            path.unlink()
        bench.table.record(WORKLOAD, f"write {label}, {kind}", "MB/s", target.name, median(rates))
        bench.table.record(
            "3 in sync",
            f"write {label}, {kind}: backend has it after",
            "s",
            target.name,
            median(lags),
            higher_better=False,
        )
    target.settle()
