"""Blocks of a large file sent while it is still being written (mountfs/upload.py).

The early passes may send blocks that a later write makes useless, but what the upload at
close commits must always be exactly the closed content: a rewrite or truncation below what
was sent early, or bytes changed behind the early upload's back, must never reach a manifest.
"""

import os
import random
from pathlib import Path

import pytest
import trio

from backend.protocol.chunking import iter_chunks
from backend.protocol.hashing import block_hash
from cache.blockcache import BlockCache
from cache.dirty import DirtyFiles
from mountfs import upload
from mountfs.upload import EARLY_BYTES, EarlyUploads, upload_blocks
from tests.support import mount as mount_fixtures
from tests.support.mount import MountProcess, account, server_file, wait_until
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory

MIB = 1024 * 1024
INODE = 7


class Server:
    """A stand-in for the server: keeps every block it is sent, checked against its name."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.sent = 0

    async def missing_blocks(self, names: list[str]) -> list[str]:
        return [name for name in names if name not in self.blocks]

    async def put_blocks(self, blocks: list[tuple[str, bytes | memoryview]]) -> None:
        for name, data in blocks:
            assert block_hash(data) == name
            self.blocks[name] = bytes(data)
            self.sent += len(data)


def expected_manifest(data: bytes) -> list[tuple[int, int, str]]:
    return [(c.offset, len(c.data), block_hash(c.data)) for c in iter_chunks(data)]


@pytest.fixture
def slow_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every writer counts as slow after a first, short window: early passes may start."""
    monkeypatch.setattr(upload, "EARLY_WRITER_RATE", float("inf"))
    monkeypatch.setattr(upload, "EARLY_WINDOW_S", 0.001)


async def settle(early: EarlyUploads) -> None:
    """Wait until no early pass runs or is about to start any more."""
    while any(state.scope is not None or state.waking for state in early._files.values()):
        await trio.sleep(0.01)


def run_writes(tmp_path: Path, steps: list[tuple[str, int, bytes | int]]) -> None:
    """Apply writes ("write", offset, data) and truncations ("truncate", size, 0) to a dirty
    copy, telling EarlyUploads as the mount does and letting its passes run after each step;
    then upload with what it sent and check the manifest and the server's bytes."""
    dirty = DirtyFiles(str(tmp_path / "dirty"))
    cache = BlockCache(str(tmp_path / "blocks"), 1 << 30)
    server = Server()
    dirty.create_empty(INODE)
    path = dirty.path(INODE)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            early = EarlyUploads(server, dirty, nursery)
            fd = os.open(path, os.O_RDWR)
            try:
                for kind, where, what in steps:
                    if kind == "write":
                        os.pwrite(fd, what, where)
                        early.wrote(INODE, where, where + len(what))
                    elif kind == "truncate":
                        os.truncate(path, where)
                        early.truncated(INODE, where)
                    else:  # changed behind its back: only the check at close can see it
                        os.pwrite(fd, what, where)
                    await settle(early)
            finally:
                os.close(fd)
            sent_early = server.sent
            known = early.take(INODE)
            assert known, "nothing was sent early"
            manifest = await upload_blocks(server, cache, path, trio.CapacityLimiter(2), known)
            data = Path(path).read_bytes()
            assert manifest.size == len(data)
            assert manifest.blocks == expected_manifest(data)
            assert b"".join(server.blocks[name] for _o, _s, name in manifest.blocks) == data
            assert sent_early > 0
            cache.close()

    trio.run(main)


def appended(rng: random.Random, total: int, start: int = 0) -> list[tuple[str, int, bytes]]:
    return [("write", start + at, rng.randbytes(MIB)) for at in range(0, total, MIB)]


@pytest.mark.usefixtures("slow_writer")
def test_a_file_written_in_order_is_mostly_sent_before_close(tmp_path: Path) -> None:
    rng = random.Random(1)
    run_writes(tmp_path, appended(rng, 3 * EARLY_BYTES + 5 * MIB))


@pytest.mark.usefixtures("slow_writer")
def test_a_rewrite_below_what_was_sent_early_reaches_the_manifest(tmp_path: Path) -> None:
    rng = random.Random(2)
    first = appended(rng, 2 * EARLY_BYTES)
    rewrite = [("write", 3 * MIB + 17, rng.randbytes(5000))]
    more = appended(rng, 2 * EARLY_BYTES + MIB, start=2 * EARLY_BYTES)
    run_writes(tmp_path, [*first, *rewrite, *more])


@pytest.mark.usefixtures("slow_writer")
def test_a_truncation_below_what_was_sent_early_reaches_the_manifest(tmp_path: Path) -> None:
    rng = random.Random(3)
    first = appended(rng, 2 * EARLY_BYTES)
    cut = [("truncate", EARLY_BYTES // 2 + 123, 0)]
    more = appended(rng, 2 * EARLY_BYTES, start=EARLY_BYTES // 2 + 123)
    run_writes(tmp_path, [*first, *cut, *more])


@pytest.mark.usefixtures("slow_writer")
def test_bytes_changed_without_notice_are_caught_at_close(tmp_path: Path) -> None:
    rng = random.Random(4)
    first = appended(rng, 2 * EARLY_BYTES)
    behind = [("behind", 5 * MIB, b"changed behind the early upload's back")]
    run_writes(tmp_path, [*first, *behind])


def fast_writes(tmp_path: Path, take_at_once: bool) -> tuple[int, int]:
    """Write 3 * EARLY_BYTES as fast as memory allows, then pause for a few windows (after
    the upload at close took the file, if `take_at_once`): the bytes sent early while
    writing, and by the end of the pause."""
    dirty = DirtyFiles(str(tmp_path / "dirty"))
    server = Server()
    dirty.create_empty(INODE)
    path = dirty.path(INODE)
    data = memoryview(random.Random(6).randbytes(3 * EARLY_BYTES))
    sent: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            early = EarlyUploads(server, dirty, nursery)
            fd = os.open(path, os.O_RDWR)
            try:
                for at in range(0, 3 * EARLY_BYTES, MIB):
                    os.pwrite(fd, data[at : at + MIB], at)
                    early.wrote(INODE, at, at + MIB)
                    await trio.lowlevel.checkpoint()  # passes could start here
            finally:
                os.close(fd)
            sent.append(server.sent)
            assert all(state.scope is None for state in early._files.values())
            if take_at_once:
                early.take(INODE)
            await trio.sleep(4 * upload.EARLY_WINDOW_S)
            await settle(early)
            sent.append(server.sent)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return sent[0], sent[1]


def test_a_fast_writer_is_not_slowed_by_early_passes_until_it_pauses(tmp_path: Path) -> None:
    while_writing, after_pause = fast_writes(tmp_path, take_at_once=False)
    assert while_writing == 0
    assert after_pause >= EARLY_BYTES


def test_no_early_pass_starts_once_the_close_took_the_file(tmp_path: Path) -> None:
    while_writing, after_pause = fast_writes(tmp_path, take_at_once=True)
    assert (while_writing, after_pause) == (0, 0)


def test_a_writer_that_speeds_up_after_an_early_pass_is_left_alone(tmp_path: Path) -> None:
    """The windows an early pass ran in do not count as a slow writer: once it ends, the
    writer shows its pace afresh, and a fast one is not made to share its cores again."""
    dirty = DirtyFiles(str(tmp_path / "dirty"))
    server = Server()
    dirty.create_empty(INODE)
    path = dirty.path(INODE)
    data = memoryview(random.Random(7).randbytes(5 * EARLY_BYTES))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            early = EarlyUploads(server, dirty, nursery)
            fd = os.open(path, os.O_RDWR)
            try:
                slow = 0
                while not server.sent and slow < 3 * EARLY_BYTES:  # 64 MiB/s at most
                    os.pwrite(fd, data[slow : slow + MIB], slow)
                    early.wrote(INODE, slow, slow + MIB)
                    slow += MIB
                    await trio.sleep(1 / 64)
                await settle(early)
                sent = server.sent
                assert sent > 0, "a slow writer got no early pass"
                for at in range(slow, len(data), MIB):  # now as fast as memory allows
                    os.pwrite(fd, data[at : at + MIB], at)
                    early.wrote(INODE, at, at + MIB)
                    await trio.lowlevel.checkpoint()
                    assert server.sent == sent
                    assert all(state.scope is None for state in early._files.values())
            finally:
                os.close(fd)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_large_file_written_in_two_phases_reaches_the_server_exactly(
    server: ServerProcess, drive_user: str, mount_factory: mount_fixtures.MountFactory
) -> None:
    """Through a real mount: blocks reach the server while the file is still open, and a
    rewrite below them plus more appends still commit exactly the closed bytes."""
    drive: MountProcess = mount_factory()
    rng = random.Random(5)
    path = drive.path / "big.bin"
    first = rng.randbytes(3 * EARLY_BYTES)
    with open(path, "wb") as out:
        out.write(first)
        out.flush()
        wait_until(lambda: account(server, drive_user)["bytes_received"] > EARLY_BYTES, 60)
        patch = rng.randbytes(70_000)
        out.seek(MIB + 5)
        out.write(patch)
        out.seek(len(first))
        tail = rng.randbytes(2 * EARLY_BYTES + 12345)
        out.write(tail)
    content = bytearray(first + tail)
    content[MIB + 5 : MIB + 5 + len(patch)] = patch
    wait_until(lambda: os.getxattr(path, "user.cirrus.status") == b"synced", timeout=120)
    assert server_file(server, drive_user, "/big.bin") == bytes(content)
    assert path.read_bytes() == bytes(content)
    assert not drive.errors_logged()
