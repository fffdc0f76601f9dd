"""The read-only `.cirrus/` folder of a real mount: history, status and mount information."""

import errno
import json
import os
import re
import stat
from pathlib import Path

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountProcess, server_stat, wait_until
from tests.support.server import ServerProcess

mount_factory = mount_fixtures.mount_factory
drive = mount_fixtures.drive
drive_user = mount_fixtures.drive_user

REVISION_NAME = re.compile(r"\d{4}-\d{2}-\d{2}_\d{6}(_r\d+)?\.bin")


def write_revision(
    server: ServerProcess, token: str, drive: MountProcess, path: str, data: bytes
) -> int:
    """Write through the mount and wait until the server has it; its revision number."""
    (drive.path / path.lstrip("/")).write_bytes(data)

    def uploaded() -> int | None:
        node = server_stat(server, token, path)
        if node and node["size"] == len(data) and node["status"] == "uploaded":
            return node["rev"]
        return None

    return wait_until(uploaded, timeout=30)


def history_dir(drive: MountProcess, path: str) -> Path:
    return drive.path / ".cirrus" / "history" / path.lstrip("/")


def test_history_lists_old_revisions_that_read_byte_identical(
    server: ServerProcess, drive_user: str, drive: MountProcess
) -> None:
    (drive.path / "sub").mkdir()
    versions = [os.urandom(3 * 1024 * 1024 + 17), b"second\n", os.urandom(200_000)]
    revs = [write_revision(server, drive_user, drive, "/sub/data.bin", v) for v in versions]
    assert revs == sorted(revs) and len(set(revs)) == 3
    folder = history_dir(drive, "/sub/data.bin")
    names = wait_until(lambda: len(os.listdir(folder)) == 3 and sorted(os.listdir(folder)))
    assert all(REVISION_NAME.fullmatch(name) for name in names), names
    contents = [(folder / name).read_bytes() for name in names]
    assert contents == versions  # oldest first: names sort by commit time
    info = os.stat(folder / names[1])
    assert stat.S_ISREG(info.st_mode) and info.st_size == len(versions[1])
    assert not info.st_mode & 0o222
    assert sorted(os.listdir(drive.path / ".cirrus" / "history")) == ["sub"]
    assert os.listdir(history_dir(drive, "/sub")) == ["data.bin"]


def test_cirrus_is_reachable_but_not_listed_and_read_only(drive: MountProcess) -> None:
    (drive.path / "a.txt").write_text("a")
    assert os.listdir(drive.path) == ["a.txt"]
    cirrus = drive.path / ".cirrus"
    assert stat.S_ISDIR(os.stat(cirrus).st_mode)
    assert sorted(os.listdir(cirrus)) == ["history", "mount.json", "status.json", "trash"]
    for attempt, code in [
        (lambda: (cirrus / "new.txt").write_text("x"), errno.EROFS),
        (lambda: (cirrus / "history" / "x").mkdir(), errno.EROFS),
        (lambda: os.rmdir(cirrus), errno.EROFS),
        (lambda: cirrus.mkdir(), errno.EEXIST),
        (lambda: os.rename(drive.path / "a.txt", cirrus / "a.txt"), errno.EROFS),
        (lambda: os.open(cirrus / "status.json", os.O_WRONLY), errno.EROFS),
        (lambda: os.stat(cirrus / "history" / "missing.txt"), errno.ENOENT),
        (lambda: os.stat(cirrus / "nothing"), errno.ENOENT),
    ]:
        with pytest.raises(OSError) as caught:
            attempt()
        assert caught.value.errno == code
    assert (drive.path / "a.txt").read_text() == "a"


def test_status_and_mount_files_describe_the_mount(
    server: ServerProcess, drive_user: str, drive: MountProcess
) -> None:
    write_revision(server, drive_user, drive, "/x.bin", b"x")
    mount_json = drive.path / ".cirrus" / "mount.json"
    assert stat.S_IMODE(os.stat(mount_json).st_mode) == 0o400
    info = json.loads(mount_json.read_text())
    assert (info["server"], info["token"]) == (server.url, drive_user)
    status = wait_until(
        lambda: (
            (s := json.loads((drive.path / ".cirrus" / "status.json").read_bytes()))
            and s["pending_operations"] == 0
            and s
        )
    )
    assert status["connection"] == "online"
    assert (status["upload_files"], status["upload_bytes"], status["conflicts"]) == (0, 0, [])


def test_a_remote_change_shows_in_the_history_folder(
    server: ServerProcess, drive_user: str, drive: MountProcess
) -> None:
    write_revision(server, drive_user, drive, "/r.bin", b"one")
    folder = history_dir(drive, "/r.bin")
    assert len(wait_until(lambda: os.listdir(folder))) == 1
    with server.client(drive_user, device="elsewhere") as client:
        answer = client.post(
            "/v1/files", params={"uploadType": "media", "path": "/r.bin"}, content=b"two"
        )
        assert answer.status_code == 201
    names = wait_until(lambda: len(os.listdir(folder)) == 2 and sorted(os.listdir(folder)))
    assert [(folder / name).read_bytes() for name in names] == [b"one", b"two"]
