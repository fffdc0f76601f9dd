"""Workload 4: delta sync and dedup, as counted by the server (Cirrus only).

The server's account reports the block bytes it received and the bytes it stores; the
harness reads both before and after each change, waiting in between until the new revision
is uploaded, so the figure is what really travelled, not what the client believes it sent.
"""

import os
import subprocess
from pathlib import Path

from bench.cirrus import CirrusTarget
from bench.context import Bench
from bench.procs import wait_until
from bench.stats import median

WORKLOAD = "4 delta, dedup"
KiB = 1024


def write_random(path: Path, size: int) -> None:
    """An incompressible file, fsynced."""
    with path.open("wb") as out:
        for offset in range(0, size, 1 << 20):
            out.write(os.urandom(min(1 << 20, size - offset)))
        os.fsync(out.fileno())


def insert_byte(path: Path) -> None:
    """Insert one byte 4 KiB into the file: everything after it shifts by one."""
    with path.open("r+b") as f:
        f.seek(4 * KiB)
        tail = f.read()
        f.seek(4 * KiB)
        f.write(b"!" + tail)


def overwrite_middle(path: Path) -> None:
    """Overwrite 4 KiB in the middle of the file."""
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(os.urandom(4 * KiB))


def append(path: Path) -> None:
    """Append 1 MiB."""
    with path.open("ab") as f:
        f.write(os.urandom(1 << 20))


CHANGES = [
    ("1-byte insert at 4 KiB", insert_byte),
    ("4 KiB overwrite in the middle", overwrite_middle),
    ("1 MiB append", append),
]


def settle(bench: Bench, target: CirrusTarget, path: Path, after_rev: int) -> int:
    """Wait until the file's new content is uploaded; its revision."""
    assert target.api is not None
    drive_path = "/" + str(path.relative_to(target.root))
    size = path.stat().st_size
    wait_until(
        lambda: target.api.uploaded(drive_path, size, after_rev),
        bench.sizes.sync_timeout,
        0.1,
        f"{drive_path} to be uploaded",
    )
    return target.api.node(drive_path)["rev"]


def delta(bench: Bench, target: CirrusTarget) -> None:
    """Bytes the server received for each small change to a large file."""
    api, size = target.api, bench.sizes.delta_bytes
    path = target.root / "delta.bin"
    write_random(path, size)
    rev = settle(bench, target, path, 0)
    for label, change in CHANGES:
        received = []
        for _ in range(bench.runs):
            before = api.account()["bytes_received"]
            change(path)
            rev = settle(bench, target, path, rev)
            received.append(api.account()["bytes_received"] - before)
        name = f"{label}, {size >> 20} MiB file: bytes received"
        bench.table.record(WORKLOAD, name, "KiB", "cirrus", median(received) / KiB, False)
        bench.table.record(
            WORKLOAD,
            f"{label}: received as share of the file",
            "%",
            "cirrus",
            100 * median(received) / size,
            False,
        )
    path.unlink()


def disk_usage(path: Path) -> int:
    """Bytes the server's data directory occupies (`du`: blocks, database, everything)."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def copy_dedup(bench: Bench, target: CirrusTarget) -> None:
    """Extra bytes stored after `cp a b` inside the drive: dedup should make it almost zero."""
    api, size = target.api, bench.sizes.copy_bytes
    source, copy = target.root / "copy-a.bin", target.root / "copy-b.bin"
    write_random(source, size)
    settle(bench, target, source, 0)
    used, disk = api.account()["used_bytes"], disk_usage(target.server.data)
    subprocess.run(["cp", str(source), str(copy)], check=True)
    settle(bench, target, copy, 0)
    grown_used = api.account()["used_bytes"] - used
    grown_disk = disk_usage(target.server.data) - disk
    label = f"cp of a {size >> 20} MiB file inside the drive"
    bench.table.record(
        WORKLOAD, f"{label}: used_bytes grew by", "%", "cirrus", 100 * grown_used / size, False
    )
    bench.table.record(
        WORKLOAD, f"{label}: server data dir grew by", "%", "cirrus", 100 * grown_disk / size, False
    )
    source.unlink()
    copy.unlink()


def run(bench: Bench) -> None:
    """Cirrus only: rclone and a local directory have no server to count bytes."""
    target = bench.target("cirrus")
    if not isinstance(target, CirrusTarget):
        bench.table.note("delta/dedup: needs the cirrus target, skipped")
        return
    for part in (delta, copy_dedup):
        try:
            part(bench, target)
        except Exception as exc:
            bench.table.note(f"cirrus: {part.__name__} failed: {exc!r}")
