"""Small statistics over repeated runs: the harness reports medians and tail percentiles."""

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager


def median(values: list[float]) -> float:
    """Median of the runs; robust to one slow outlier, which is why we report it."""
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile, so p99 of 100 samples is the 99th smallest sample."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Stopwatch:
    """Elapsed seconds of a `with` block, read after it ends."""

    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Stopwatch]:
    """Time a block with the monotonic clock."""
    watch = Stopwatch()
    start = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - start
