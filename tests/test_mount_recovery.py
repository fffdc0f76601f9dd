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
    older copy. The leftover is made by hand: the window is too short to hit on purpose."""
    drive = mount_factory("a")
    path = drive.path / "ledger.txt"
    acknowledged = b"acknowledged version\n" * 100
    path.write_bytes(acknowledged)
    wait_until(lambda: synced(path))
    before = len(revisions(server, drive_user, "/ledger.txt"))
    inode = path.stat().st_ino
    drive.unmount()
    (drive.cache_dir / "dirty" / f"{inode}.acked").write_bytes(b"an older version\n")
    drive.mount()
    crash_mid_rewrite(drive, path, b"partial")
    drive.mount()
    assert path.read_bytes() == acknowledged
    wait_until(lambda: synced(path))
    assert server_file(server, drive_user, "/ledger.txt") == acknowledged
    assert len(revisions(server, drive_user, "/ledger.txt")) == before
