"""The trash seen from a mount: a folder deleted there and restored through the API comes
back in the mount with its content."""

import os
import shutil

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, server_stat, wait_until
from tests.support.server import ServerProcess

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
