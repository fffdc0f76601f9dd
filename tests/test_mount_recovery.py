"""Crash recovery and refused changes, through real mounts and a real server.

After a kill -9, a file changed since its last close()/fsync() goes back to what that call
acknowledged (never to a partial write); a change the server refuses is dropped and the mount
shows the server's state instead.
"""

import os

from tests.support import mount as mount_fixtures
from tests.support.crash import close_quietly, revisions
from tests.support.mount import (
    MountFactory,
    MountProcess,
    server_file,
    server_stat,
    synced,
    wait_until,
)
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory


def crash_mid_rewrite(drive: MountProcess, path: os.PathLike, data: bytes) -> None:
    """Start a new version (O_TRUNC), write part of it and kill the mount with the
    descriptor still open (closed afterwards, whatever happens)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
        drive.kill9()
    finally:
        close_quietly(fd)


def test_uploaded_version_comes_back_after_a_crash_mid_rewrite(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    path = drive.path / "report.txt"
    path.write_bytes(b"acknowledged version\n" * 1000)
    wait_until(lambda: synced(path))
    before = len(revisions(server, drive_user, "/report.txt"))
    crash_mid_rewrite(drive, path, b"partial")
    drive.mount()
    assert path.read_bytes() == b"acknowledged version\n" * 1000
    wait_until(lambda: synced(path))
    assert server_file(server, drive_user, "/report.txt") == b"acknowledged version\n" * 1000
    assert len(revisions(server, drive_user, "/report.txt")) == before


def test_unsent_version_comes_back_after_a_crash_mid_rewrite(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    server.stop()  # the acknowledged version stays local: it must be preserved, not uploaded
    path = drive.path / "notes.bin"
    acknowledged = os.urandom(300_000)
    path.write_bytes(acknowledged)
    crash_mid_rewrite(drive, path, b"torn" * 100)
    server.start()
    drive.mount()
    assert path.read_bytes() == acknowledged
    wait_until(lambda: server_file(server, drive_user, "/notes.bin") == acknowledged, 30)
    wait_until(lambda: synced(path))
    assert [r["size"] for r in revisions(server, drive_user, "/notes.bin")] == [len(acknowledged)]


def test_folder_refused_by_the_server_gives_way_to_the_server_file(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    server.stop()
    (drive.path / "plans").mkdir()
    (drive.path / "plans" / "inner.txt").write_text("written offline")
    drive.kill9()  # the journal keeps the mkdir and the upload for the next mount
    server.start()
    with server.client(drive_user) as client:  # meanwhile another client takes the name
        answer = client.post(
            "/v1/files", params={"uploadType": "media", "path": "/plans"}, content=b"a file"
        )
        answer.raise_for_status()
    drive.mount()
    plans = drive.path / "plans"
    wait_until(lambda: plans.is_file(), timeout=30)
    assert plans.read_bytes() == b"a file"
    wait_until(lambda: synced(plans))
    assert os.listdir(drive.path) == ["plans"]
    assert server_stat(server, drive_user, "/plans")["type"] == "file"
    assert "refused" in drive.log_tail(200)


def test_a_crash_never_goes_back_to_an_older_copy_left_on_the_disk(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """A preserved copy outlives the acknowledgement that superseded it for up to a second
    (until that acknowledgement is durable), and a kill -9 between the mirror's commit and
    the copy's removal leaves it behind. A change that starts while the server already
    holds the acknowledged version, then a crash, must go back to that version, not to the
    older copy. The leftover is made by hand, while the mount runs (a start-up deletes
    it): the window is too short to hit on purpose."""
    drive = mount_factory("a")
    path = drive.path / "ledger.txt"
    acknowledged = b"acknowledged version\n" * 100
    path.write_bytes(acknowledged)
    wait_until(lambda: synced(path))
    before = len(revisions(server, drive_user, "/ledger.txt"))
    (drive.cache_dir / "dirty" / f"{path.stat().st_ino}.acked").write_bytes(b"an older version\n")
    crash_mid_rewrite(drive, path, b"partial")
    drive.mount()
    assert path.read_bytes() == acknowledged
    wait_until(lambda: synced(path))
    assert server_file(server, drive_user, "/ledger.txt") == acknowledged
    assert len(revisions(server, drive_user, "/ledger.txt")) == before


def test_a_start_deletes_the_copies_a_crash_left_for_clean_files(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """A kill -9 between the mirror's commit and the deletions that wait for it leaves the
    copies of a file the mirror calls clean; an interrupted copy leaves a temporary. The
    next start deletes them, and keeps the copy of a file whose upload is still due."""
    drive = mount_factory("a")
    clean = drive.path / "clean.txt"
    clean.write_bytes(b"on the server\n" * 100)
    wait_until(lambda: synced(clean))
    server.stop()
    due = drive.path / "due.bin"
    written_offline = os.urandom(200_000)
    due.write_bytes(written_offline)
    dirty = drive.cache_dir / "dirty"
    leftovers = [str(clean.stat().st_ino) + suffix for suffix in ("", ".acked", ".part")]
    leftovers += [f"{due.stat().st_ino}.part", "987654"]
    drive.kill9()
    for name in leftovers:
        (dirty / name).write_bytes(b"left by a crash")
    (dirty / "notes.txt").write_bytes(b"not the mount's")
    drive.mount()  # offline: the upload of due.bin is still due
    assert [name for name in leftovers if (dirty / name).exists()] == []
    assert (dirty / "notes.txt").exists()
    assert (dirty / str(due.stat().st_ino)).exists()
    assert clean.read_bytes() == b"on the server\n" * 100
    assert due.read_bytes() == written_offline
    server.start()
    wait_until(lambda: server_file(server, drive_user, "/due.bin") == written_offline, 30)
