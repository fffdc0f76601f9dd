"""Workload 5: sync latency between two mounts of one drive (Cirrus only).

A file is rewritten and closed on mount A; the clock runs until mount B, with its own cache
directory, reads the new content. The content always has the same length, so a client that
trusts stale cached attributes or pages is caught rather than flattered.
"""

import time
from pathlib import Path

from bench.cirrus import CirrusTarget
from bench.context import Bench
from bench.stats import median, percentile

WORKLOAD = "5 sync latency"
GIVE_UP_S = 10.0


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def seen_after(path: Path, content: bytes, limit: float) -> float:
    """Seconds until `path` reads as `content`, polling every millisecond; `limit` if never."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if read_or_none(path) == content:
            return time.perf_counter() - start
        time.sleep(0.001)
    return limit


def samples(writer: Path, reader: Path, count: int) -> list[float]:
    """`count` write-close-then-read-elsewhere delays, in seconds."""
    delays = []
    for i in range(-1, count):  # sample -1 creates the file and is not counted
        content = f"sample {i:06d} {time.time_ns():020d}\n".encode()
        writer.write_bytes(content)
        delay = seen_after(reader, content, GIVE_UP_S if i >= 0 else 60.0)
        if i >= 0:
            delays.append(delay)
        time.sleep(0.02)
    return delays


def run(bench: Bench) -> None:
    """Mount the drive a second time, take the samples, report p50 and p99."""
    target = bench.target("cirrus")
    if not isinstance(target, CirrusTarget):
        bench.table.note("sync latency: needs the cirrus target, skipped")
        return
    second = None
    try:
        second = target.new_mount(target.scratch / "mnt-b")
        delays = samples(
            target.root / "latency.txt",
            second.mountpoint / "latency.txt",
            bench.sizes.latency_samples,
        )
    except Exception as exc:
        bench.table.note(f"cirrus: sync latency failed: {exc!r}")
        return
    finally:
        if second is not None:
            target.drop_mount(second)
    n = len(delays)
    missed = sum(d >= GIVE_UP_S for d in delays)
    if missed:
        bench.table.note(f"cirrus: {missed} of {n} latency samples not seen within {GIVE_UP_S}s")
    for label, value in (("p50", median(delays)), ("p99", percentile(delays, 99))):
        bench.table.record(
            WORKLOAD,
            f"close on A → new content read on B, {label} of {n}",
            "ms",
            "cirrus",
            value * 1000,
            False,
        )
