"""fsx-style test: random reads, writes, truncates and mmap reads/writes on one file, each
checked against an in-memory bytearray model, across close/reopen and remounts; at the end the
server's copy must equal the model.

Sizes: CIRRUS_TORTURE_FSX_OPS operations on a file of at most CIRRUS_TORTURE_FSX_MAX_SIZE bytes
(large enough to span several content-defined blocks), CIRRUS_TORTURE_SEED for the sequence.
"""

from __future__ import annotations

import mmap
import os
import random
from collections import deque
from collections.abc import Callable

import pytest

from .drives import Drive
from .harness import env_int, report, wait_until

SYNC_TIMEOUT_S = 60.0


class Fsx:
    """One file on the drive and its model; every operation is followed by a full check."""

    def __init__(self, drive: Drive, max_size: int, seed: int) -> None:
        self.drive = drive
        self.path = drive.root / "fsx.bin"
        self.max_size = max_size
        self.rng = random.Random(seed)
        self.model = bytearray()
        self.recent: deque[str] = deque(maxlen=25)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.bytes_verified = 0
        self.counts: dict[str, int] = {}

    def span(self) -> tuple[int, int]:
        """A random (offset, length) inside max_size, often small, sometimes block-sized."""
        offset = self.rng.randrange(self.max_size)
        limit = self.rng.choice([16, 4096, 200_000, self.max_size])
        return offset, self.rng.randint(1, max(1, min(limit, self.max_size - offset)))

    def grow_model(self, end: int) -> None:
        if end > len(self.model):
            self.model.extend(bytes(end - len(self.model)))

    def write(self) -> str:
        offset, length = self.span()
        data = self.rng.randbytes(length)
        assert os.pwrite(self.fd, data, offset) == length
        self.grow_model(offset + length)
        self.model[offset : offset + length] = data
        return f"write {offset}+{length}"

    def truncate(self) -> str:
        size = self.rng.choice([0, self.rng.randrange(self.max_size + 1), len(self.model) // 2])
        os.ftruncate(self.fd, size)
        del self.model[size:]
        self.grow_model(size)
        return f"truncate {size}"

    def read(self) -> str:
        offset, length = self.span()
        got = os.pread(self.fd, length, offset)
        assert got == bytes(self.model[offset : offset + length]), f"read {offset}+{length}"
        return f"read {offset}+{length}"

    def map_read(self) -> str:
        if not self.model:
            return "mapread skipped (empty file)"
        offset = self.rng.randrange(len(self.model))
        length = self.rng.randint(1, len(self.model) - offset)
        with mmap.mmap(self.fd, len(self.model), access=mmap.ACCESS_READ) as view:
            assert view[offset : offset + length] == self.model[offset : offset + length]
        return f"mapread {offset}+{length}"

    def map_write(self) -> str:
        """Writes through a shared mapping; like fsx, grows the file first when needed."""
        offset, length = self.span()
        end = offset + length
        if end > len(self.model):
            os.ftruncate(self.fd, end)
            self.grow_model(end)
        data = self.rng.randbytes(length)
        with mmap.mmap(self.fd, len(self.model)) as view:
            view[offset:end] = data
            view.flush()
        self.model[offset:end] = data
        return f"mapwrite {offset}+{length}"

    def fsync(self) -> str:
        os.fsync(self.fd)
        return "fsync"

    def reopen(self) -> str:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR)
        return "close+reopen"

    def remount(self) -> str:
        os.close(self.fd)
        self.drive.remount()
        self.fd = os.open(self.path, os.O_RDWR)
        return "remount"

    def check(self) -> None:
        """The whole file, through the file descriptor, must equal the model."""
        size = os.fstat(self.fd).st_size
        assert size == len(self.model), f"size {size}, model {len(self.model)}"
        data = os.pread(self.fd, size + 1, 0) if size else b""
        while len(data) < size:  # FUSE may return short reads for large requests
            chunk = os.pread(self.fd, size - len(data), len(data))
            assert chunk, f"unexpected end of file at {len(data)} of {size}"
            data += chunk
        assert data == self.model, f"content differs at byte {first_difference(data, self.model)}"
        self.bytes_verified += size

    def step(self, op: Callable[[], str]) -> None:
        self.counts[op.__name__] = self.counts.get(op.__name__, 0) + 1
        self.recent.append(op())
        try:
            self.check()
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last operations: {list(self.recent)}") from None

    def run(self, ops: int, remount_every: int) -> None:
        choices = [self.write] * 4 + [self.read] * 2 + [self.map_read, self.map_write]
        choices += [self.truncate, self.fsync, self.reopen]
        for number in range(1, ops + 1):
            remount = remount_every and number % remount_every == 0
            self.step(self.remount if remount else self.rng.choice(choices))
        os.close(self.fd)


def first_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def run_fsx(drive: Drive, ops: int, max_size: int, remount_every: int) -> None:
    seed = env_int("CIRRUS_TORTURE_SEED", random.randrange(2**32))
    fsx = Fsx(drive, max_size, seed)
    try:
        fsx.run(ops, remount_every)
    finally:
        report(
            f"fsx seed={seed}: {sum(fsx.counts.values())} operations {fsx.counts}, "
            f"{fsx.bytes_verified} bytes verified, final size {len(fsx.model)}"
        )
    if drive.view is not None:
        expected = bytes(fsx.model)
        problems = wait_until(lambda: server_differs(drive, expected), SYNC_TIMEOUT_S)
        assert not problems, problems
        report(f"fsx: server copy equals the model ({len(expected)} bytes)")


def server_differs(drive: Drive, expected: bytes) -> list[str]:
    assert drive.view is not None
    got = drive.view.content("/fsx.bin")
    if got == expected:
        return []
    if got is None:
        return ["/fsx.bin is missing or pending on the server"]
    return [f"server has {len(got)} bytes, differing at {first_difference(got, expected)}"]


def test_fsx_short(drive: Drive) -> None:
    run_fsx(
        drive,
        env_int("CIRRUS_TORTURE_FSX_OPS", 300),
        env_int("CIRRUS_TORTURE_FSX_MAX_SIZE", 1 << 20),
        remount_every=100,
    )


@pytest.mark.slow
def test_fsx_long(drive: Drive) -> None:
    run_fsx(
        drive,
        env_int("CIRRUS_TORTURE_FSX_OPS", 20_000),
        env_int("CIRRUS_TORTURE_FSX_MAX_SIZE", 4 << 20),
        remount_every=500,
    )
