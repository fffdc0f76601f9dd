"""Readers of a file that another client commits meanwhile, through two real mounts.

A descriptor opened on one revision keeps reading that revision to its end, as a descriptor
on a local file replaced by a rename keeps reading the old inode: never a mix of two
revisions. Descriptors opened after the change read the new revision.
"""

import os
import random

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, synced, wait_until

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory

SIZE = 3 * 1024 * 1024  # several content-defined blocks
HEAD = 64 * 1024


def test_an_open_reader_keeps_its_revision_when_another_client_commits(
    mount_factory: MountFactory,
) -> None:
    writer, reader = mount_factory("writer"), mount_factory("reader")
    rng = random.Random(7)
    old, new = rng.randbytes(SIZE), rng.randbytes(SIZE)
    written, read = writer.path / "shared.bin", reader.path / "shared.bin"
    written.write_bytes(old)
    wait_until(lambda: synced(written))
    wait_until(lambda: read.exists() and read.stat().st_size == SIZE)

    fd = os.open(read, os.O_RDONLY)
    try:
        assert os.pread(fd, HEAD, 0) == old[:HEAD]
        written.write_bytes(new)
        wait_until(lambda: synced(written))
        mtime = written.stat().st_mtime_ns
        wait_until(lambda: read.stat().st_mtime_ns == mtime)  # the reader's mount has it
        rest = b""
        while len(rest) < SIZE - HEAD and (piece := os.pread(fd, 1 << 20, HEAD + len(rest))):
            rest += piece
        assert rest == old[HEAD:], "the open descriptor read part of the new revision"
    finally:
        os.close(fd)
    assert read.read_bytes() == new
