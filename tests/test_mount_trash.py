"""The trash seen from a mount: a folder deleted there and restored through the API comes
back in the mount with its content; `.cirrus/trash/` shows deleted items, read-only, and
follows restores and purges made elsewhere."""

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, MountProcess, server_file, server_stat, wait_until
from tests.support.server import COMMAND_TIMEOUT_S, ServerProcess, cirrus_executable

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory


def test_a_folder_restored_from_the_trash_shows_up_in_the_mount(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    deep = drive.path / "project" / "src" / "pkg"
    deep.mkdir(parents=True)
    payload = os.urandom(200_000)
    (deep / "data.bin").write_bytes(payload)
    (drive.path / "project" / "README").write_text("read me")
    wait_until(lambda: server_stat(server, drive_user, "/project/src/pkg/data.bin"), timeout=20)
    shutil.rmtree(drive.path / "project")
    wait_until(lambda: server_stat(server, drive_user, "/project") is None, timeout=20)
    with server.client(drive_user) as client:
        items = client.get("/v1/trash").raise_for_status().json()["items"]
        assert [item["path"] for item in items] == ["/project"]
        assert items[0]["files"] == 2 and items[0]["device"]
        client.post("/v1/trash/restore", json={"id": items[0]["id"]}).raise_for_status()
    wait_until(lambda: (deep / "data.bin").exists(), timeout=10)
    assert (deep / "data.bin").read_bytes() == payload
    assert (drive.path / "project" / "README").read_text() == "read me"


def trash_names(drive: MountProcess) -> list[str]:
    return sorted(os.listdir(drive.path / ".cirrus" / "trash"))


def test_deleted_items_read_byte_identical_under_cirrus_trash(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    payload, old = os.urandom(3 * 1024 * 1024 + 5), b"an older report.txt\n"
    (drive.path / "report.txt").write_bytes(old)
    (drive.path / "photos" / "2026").mkdir(parents=True)
    (drive.path / "photos" / "2026" / "beach.jpg").write_bytes(payload)
    wait_until(lambda: server_stat(server, drive_user, "/photos/2026/beach.jpg"), timeout=20)
    os.unlink(drive.path / "report.txt")  # deleted on the mount
    (drive.path / "report.txt").write_bytes(b"the new report.txt\n")
    wait_until(lambda: server_file(server, drive_user, "/report.txt") == b"the new report.txt\n")
    os.unlink(drive.path / "report.txt")
    with server.client(drive_user, device="phone") as phone:  # deleted by another client
        phone.post("/v1/tree/delete", json={"path": "/photos", "recursive": True})
    wait_until(lambda: len(trash_names(drive)) == 3, timeout=20)
    with server.client(drive_user) as client:
        items = client.get("/v1/trash").raise_for_status().json()["items"]
    older = min(item["id"] for item in items if item["path"] == "/report.txt")
    older_name = f"report (item {older}).txt"
    assert trash_names(drive) == sorted(["photos", older_name, "report.txt"])
    trash = drive.path / ".cirrus" / "trash"
    assert (trash / "report.txt").read_bytes() == b"the new report.txt\n"  # the newest
    assert (trash / older_name).read_bytes() == old
    assert stat.S_ISDIR(os.stat(trash / "photos" / "2026").st_mode)
    assert (trash / "photos" / "2026" / "beach.jpg").read_bytes() == payload
    assert os.listdir(drive.path) == []  # .cirrus stays out of the root's listing
    for attempt in [
        lambda: (trash / "report.txt").write_bytes(b"x"),
        lambda: os.unlink(trash / "report.txt"),
        lambda: (trash / "photos" / "new").mkdir(),
        lambda: os.rename(trash / "report.txt", drive.path / "back.txt"),
    ]:
        with pytest.raises(OSError) as caught:
            attempt()
        assert caught.value.errno == errno.EROFS
    shutil.copy(trash / "photos" / "2026" / "beach.jpg", drive.path / "copied.jpg")  # a copy out
    wait_until(lambda: server_file(server, drive_user, "/copied.jpg") == payload, timeout=20)


def test_a_restore_or_purge_elsewhere_updates_cirrus_trash(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory, tmp_path: Path
) -> None:
    drive = mount_factory("a")
    (drive.path / "gone.txt").write_text("gone")
    (drive.path / "kept.txt").write_text("kept")
    wait_until(lambda: server_stat(server, drive_user, "/kept.txt"), timeout=20)
    os.unlink(drive.path / "gone.txt")
    os.unlink(drive.path / "kept.txt")
    wait_until(lambda: trash_names(drive) == ["gone.txt", "kept.txt"], timeout=20)
    restored = subprocess.run(
        [cirrus_executable(), "trash", "restore", ".cirrus/trash/kept.txt"],
        cwd=drive.path,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert restored.returncode == 0 and "restored /kept.txt" in restored.stdout, restored.stderr
    wait_until(lambda: (drive.path / "kept.txt").exists(), timeout=10)
    assert (drive.path / "kept.txt").read_text() == "kept"
    with server.client(drive_user) as client:
        client.post("/v1/trash/purge", json={"all": True}).raise_for_status()
    wait_until(lambda: trash_names(drive) == [], timeout=10)
    with pytest.raises(FileNotFoundError):
        (drive.path / ".cirrus" / "trash" / "gone.txt").read_text()
