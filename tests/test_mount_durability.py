"""What close() and fsync() promise (mountfs/durability.py): close() waits for no disk flush,
fsync() flushes the file and then the journal, and a group commit flushes what close()
acknowledged within a round. A power cut cannot be caused here, so the flushes themselves are
what is observed: every os.fsync is recorded with the file it flushed. A crash of the mount
process right after a close (what the page cache survives) is caused for real."""

import os

import pytest
import trio

from backend.protocol.hashing import block_hash
from cache.dirty import DirtyFiles
from cache.metadb import MetaDB
from mountfs import durability as durability_module
from mountfs.durability import Durability
from tests.support import mount as mount_fixtures
from tests.support.crash import crash_while_open
from tests.support.mount import MountFactory, server_file, server_stat, wait_until
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory


@pytest.fixture
def flushed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The base names of the files fsynced, in order."""
    names: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        names.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return names


@pytest.fixture
def parts(tmp_path) -> tuple[DirtyFiles, MetaDB, Durability]:
    dirty = DirtyFiles(str(tmp_path / "dirty"))
    db = MetaDB(str(tmp_path / "metadata.db"))
    yield dirty, db, Durability(dirty, db.sync, db.commits)
    db.close()


def _write(dirty: DirtyFiles, inode: int, data: bytes) -> None:
    dirty.create_empty(inode)
    os.pwrite(dirty.fd(inode), data, 0)


def test_close_flushes_nothing_until_the_group_commit(parts, flushed) -> None:
    dirty, _db, durability = parts
    _write(dirty, 7, b"closed")
    durability.closed(7)
    assert not durability.power_safe(7)
    assert flushed == []
    trio.run(durability.group_commit)
    assert flushed == ["7", "metadata.db-wal"]
    assert durability.power_safe(7)
    flushed.clear()
    trio.run(durability.group_commit)
    assert flushed == []  # nothing new: no round


def test_a_commit_alone_is_flushed_by_the_next_round(parts, flushed) -> None:
    _dirty, db, durability = parts
    trio.run(durability.group_commit)
    flushed.clear()
    db.set_state("something", "changed")
    trio.run(durability.group_commit)
    assert flushed == ["metadata.db-wal"]


def test_fsync_flushes_the_file_before_the_journal(parts, flushed) -> None:
    dirty, _db, durability = parts
    _write(dirty, 9, b"closed, then fsynced")
    durability.closed(9)
    trio.run(durability.fsync, 9)
    assert flushed == ["9", "metadata.db-wal"]
    assert durability.power_safe(9)


def test_appends_after_a_durable_acknowledgement_keep_the_next_rewrite_noted(parts) -> None:
    dirty, _db, durability = parts
    _write(dirty, 6, b"fsynced")
    trio.run(durability.fsync, 6)
    assert durability.must_note(6)  # the disk holds this acknowledgement as the last word
    durability.grew(6)  # appends note nothing on the disk...
    durability.closed(6)  # ...so an unsynced close after them does not either
    assert not durability.power_safe(6)
    assert durability.must_note(6)
    durability.noted(6)
    assert not durability.must_note(6)  # the change is noted: the rest of the cycle is free
    trio.run(durability.group_commit)
    assert durability.must_note(6)  # the round put the close on the disk: note again


def test_a_superseded_preserved_copy_goes_only_after_the_round(parts) -> None:
    dirty, _db, durability = parts
    _write(dirty, 3, b"acknowledged, not uploaded")
    dirty.preserve(3, len(b"acknowledged, not uploaded"))
    dirty.supersede_preserved(3)
    durability.closed(3)
    assert os.path.exists(dirty.preserved_path(3))  # a power cut now would go back to it
    trio.run(durability.group_commit)
    assert not os.path.exists(dirty.preserved_path(3))


def test_a_copy_preserved_again_before_the_round_is_kept(parts) -> None:
    dirty, _db, durability = parts
    _write(dirty, 4, b"first")
    dirty.preserve(4, 5)
    dirty.supersede_preserved(4)
    durability.closed(4)
    dirty.preserve(4, 5)  # a new change keeps the newer acknowledgement before it lands
    trio.run(durability.group_commit)
    assert dirty.has_preserved(4)


def test_a_failed_round_is_tried_again(parts, monkeypatch) -> None:
    dirty, _db, durability = parts
    _write(dirty, 5, b"closed")
    durability.closed(5)

    def failing(paths) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(durability_module, "_fsync_files", failing)
    with pytest.raises(OSError):
        trio.run(durability.group_commit)
    assert not durability.power_safe(5)
    monkeypatch.undo()
    trio.run(durability.group_commit)
    assert durability.power_safe(5)


def test_a_file_closed_just_before_the_mount_dies_is_kept_and_sent(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """kill -9 right after close(), before any group commit could run: the page cache and
    the WAL keep what close() acknowledged."""
    drive = mount_factory("a")
    server.stop()  # nothing is uploaded before the crash
    data = os.urandom(200_000)
    (drive.path / "closed.bin").write_bytes(data)
    drive.kill9()
    server.start()
    drive.mount()
    assert (drive.path / "closed.bin").read_bytes() == data
    wait_until(lambda: server_file(server, drive_user, "/closed.bin") == data, 30)


_NEW_FOR_WRITING = os.O_WRONLY | os.O_CREAT | os.O_EXCL  # how tar opens what it extracts


def _set_attributes_like_tar(fd: int) -> None:
    """What tar does to each file it writes, before closing it."""
    os.utime(fd, ns=(1_600_000_000 * 10**9, 1_500_000_000 * 10**9))
    os.fchown(fd, 4321, 4321)
    os.fchmod(fd, 0o640)


def _has_tar_attributes(stat: dict | None) -> bool:
    wanted = (0o640, 1_500_000_000 * 10**9, 4321, 4321)
    return (
        stat is not None
        and (stat["mode"] & 0o7777, stat["mtime_ns"], stat["uid"], stat["gid"]) == wanted
    )


def test_attributes_set_while_writing_reach_the_server_with_the_close(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    fd = os.open(drive.path / "extracted.txt", _NEW_FOR_WRITING, 0o600)
    try:
        os.write(fd, b"content")
        _set_attributes_like_tar(fd)
    finally:
        os.close(fd)
    stat = os.stat(drive.path / "extracted.txt")
    assert (stat.st_mode & 0o7777, stat.st_uid, stat.st_mtime_ns) == (
        0o640,
        4321,
        1_500_000_000 * 10**9,
    )
    wait_until(lambda: _has_tar_attributes(server_stat(server, drive_user, "/extracted.txt")), 30)
    assert server_file(server, drive_user, "/extracted.txt") == b"content"


def test_attributes_set_while_writing_are_acknowledged_with_the_data(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """fsync() acknowledges them with the data; a crash goes back to that acknowledgement,
    attributes set since included."""
    drive = mount_factory("a")
    server.stop()

    def write(fd: int) -> None:
        os.write(fd, b"acknowledged")
        _set_attributes_like_tar(fd)
        os.fsync(fd)
        os.write(fd, b", then never acknowledged")
        os.fchmod(fd, 0o604)

    crash_while_open(drive, drive.path / "cut.txt", _NEW_FOR_WRITING, write, mode=0o600)
    server.start()
    drive.mount()
    assert (drive.path / "cut.txt").read_bytes() == b"acknowledged"
    stat = os.stat(drive.path / "cut.txt")
    assert (stat.st_mode & 0o7777, stat.st_uid, stat.st_mtime_ns) == (0o640, 4321, 1_500 * 10**15)
    wait_until(lambda: _has_tar_attributes(server_stat(server, drive_user, "/cut.txt")), 30)
    assert server_file(server, drive_user, "/cut.txt") == b"acknowledged"


def test_attributes_set_while_writing_go_back_with_the_data_on_a_crash(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    server.stop()

    def write(fd: int) -> None:
        os.write(fd, b"never acknowledged")
        _set_attributes_like_tar(fd)

    crash_while_open(drive, drive.path / "gone.txt", _NEW_FOR_WRITING, write, mode=0o600)
    server.start()
    drive.mount()
    stat = os.stat(drive.path / "gone.txt")
    assert (stat.st_size, stat.st_mode & 0o7777, stat.st_uid) == (0, 0o600, os.getuid())
    wait_until(lambda: server_stat(server, drive_user, "/gone.txt") is not None, 30)
    server_node = server_stat(server, drive_user, "/gone.txt")
    assert (server_node["size"], server_node["mode"] & 0o7777) == (0, 0o600)


def test_a_small_file_once_committed_is_read_from_its_block_in_the_cache(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """Its dirty copy becomes its block (a rename, mountfs/replay.py): it still reads with
    the server away, and nothing is left in the dirty folder but its stock of spare files."""
    drive = mount_factory("a")
    contents = {f"small-{n}.txt": os.urandom(3000 + n) for n in range(3)}
    for name, data in contents.items():
        (drive.path / name).write_bytes(data)
    for name, data in contents.items():
        wait_until(lambda name=name, data=data: server_file(server, drive_user, f"/{name}") == data)
    dirty = drive.cache_dir / "dirty"
    wait_until(lambda: {path.name for path in dirty.iterdir()} == {"spare"}, 30)
    cached = {path.name for path in (drive.cache_dir / "blocks").glob("*/*")}
    assert {block_hash(data) for data in contents.values()} <= cached
    drive.unmount()
    server.stop()
    drive.mount()
    for name, data in contents.items():
        assert (drive.path / name).read_bytes() == data
