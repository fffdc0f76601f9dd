"""A file that only grows after its acknowledgement (a log, a database's journal) keeps the
acknowledged content as the untouched prefix of its dirty copy (mountfs/acknowledged.py):
no copy and no note on the disk per append. Shown through real mounts, a real server and
real kill -9 crashes: what fsync() acknowledged comes back, unacknowledged appends are cut
off, a rewrite below the acknowledged size still goes back to it, and every revision the
server gets while the writer appends on is a whole acknowledged prefix."""

import os
import time

from cache.dirty import DirtyFiles
from mountfs.acknowledged import Acknowledged
from tests.support import mount as mount_fixtures
from tests.support.crash import crash_while_open, revisions
from tests.support.mount import MountFactory, server_file, wait_until
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory


def revision(server: ServerProcess, token: str, path: str, rev: int) -> bytes:
    with server.client(token) as client:
        answer = client.get("/v1/files/content", params={"path": path, "rev": rev})
    return answer.raise_for_status().content


def test_appends_after_the_last_fsync_are_cut_off_by_a_crash(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    server.stop()  # nothing reaches the server: the acknowledged log lives in the cache only
    path = drive.path / "app.log"
    acknowledged = b"".join(b"line %d acknowledged\n" % n for n in range(50))

    def log(fd: int) -> None:
        for n in range(50):
            os.write(fd, b"line %d acknowledged\n" % n)
            os.fsync(fd)
        os.write(fd, b"line 50 written, never fsynced\n")

    crash_while_open(drive, path, os.O_WRONLY | os.O_APPEND, log)
    server.start()
    drive.mount()
    assert path.read_bytes() == acknowledged
    wait_until(lambda: server_file(server, drive_user, "/app.log") == acknowledged, 30)


def test_a_rewrite_after_appends_goes_back_to_the_acknowledged_prefix(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    server.stop()
    path = drive.path / "journal.db"
    acknowledged = os.urandom(200_000)

    def rewrite(fd: int) -> None:
        os.write(fd, acknowledged)
        os.fsync(fd)
        os.pwrite(fd, b"appended, not acknowledged", len(acknowledged))
        os.pwrite(fd, b"torn page", 4096)  # below the acknowledged size: kept first

    crash_while_open(drive, path, os.O_RDWR, rewrite)
    server.start()
    drive.mount()
    assert path.read_bytes() == acknowledged
    wait_until(lambda: server_file(server, drive_user, "/journal.db") == acknowledged, 30)
    sizes = [r["size"] for r in revisions(server, drive_user, "/journal.db")]
    assert sizes == [len(acknowledged)]


def test_every_revision_sent_while_the_log_grows_is_an_acknowledged_prefix(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    path = drive.path / "server.log"
    lines = [b"%05d request served\n" % n for n in range(400)]
    boundaries = {sum(len(line) for line in lines[:n]) for n in range(len(lines) + 1)}
    whole = b"".join(lines)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for line in lines:  # each line half written for a while: never acknowledged so
            os.write(fd, line[:8])
            time.sleep(0.005)
            os.write(fd, line[8:])
            os.fsync(fd)
        # Still open and growing: the server gets what fsync acknowledged without a close.
        wait_until(lambda: server_file(server, drive_user, "/server.log") == whole, 30)
    finally:
        os.close(fd)
    kept = revisions(server, drive_user, "/server.log")
    assert len(kept) > 1  # sent while the writer went on, not once at the end
    for rev in kept:
        assert rev["size"] in boundaries  # cut at an fsync, never inside a line
        assert revision(server, drive_user, "/server.log", rev["rev"]) == whole[: rev["size"]]
    assert path.read_bytes() == whole


def test_a_prefix_source_is_torn_by_a_rewrite_and_whole_copies_by_any_write(tmp_path) -> None:
    dirty = DirtyFiles(str(tmp_path / "dirty"))
    generations = {5: 0}
    acknowledged = Acknowledged(dirty, lambda inode: generations[inode])
    dirty.create_empty(5)
    os.pwrite(dirty.fd(5), b"acknowledged", 0)

    class Node:
        inode, size = 5, len(b"acknowledged")

    whole = acknowledged.source(Node)
    assert (whole.path, whole.size, whole.preserved) == (dirty.path(5), None, False)
    generations[5] += 1  # any write tears a whole-copy source
    assert not acknowledged.intact(whole)

    acknowledged.grew(5)
    prefix = acknowledged.source(Node)
    assert (prefix.path, prefix.size) == (dirty.path(5), len(b"acknowledged"))
    generations[5] += 1  # appends leave the prefix intact
    assert acknowledged.intact(prefix)
    acknowledged.rewriting(5)  # a change below the acknowledged size tears it
    assert not acknowledged.intact(prefix)
    assert not acknowledged.growing(5)

    dirty.preserve(5, len(b"acknowledged"))
    preserved = acknowledged.source(Node)
    assert (preserved.path, preserved.size) == (dirty.preserved_path(5), None)
    acknowledged.rewriting(5)
    assert acknowledged.intact(preserved)


def test_a_preserved_copy_after_appends_holds_only_the_acknowledged_bytes(tmp_path) -> None:
    dirty = DirtyFiles(str(tmp_path / "dirty"))
    dirty.create_empty(8)
    os.pwrite(dirty.fd(8), b"acknowledged" + b", appended since", 0)
    dirty.preserve(8, len(b"acknowledged"))
    with open(dirty.preserved_path(8), "rb") as preserved:
        assert preserved.read() == b"acknowledged"
    dirty.cut_to(8, 4)
    assert os.pread(dirty.fd(8), 100, 0) == b"ackn"
    dirty.cut_to(8, 100)  # never grows a file
    assert dirty.size(8) == 4
