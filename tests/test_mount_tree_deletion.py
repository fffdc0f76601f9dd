"""`rm -rf` through a mount: a folder and everything below it, deleted name by name, reach
the server as one recursive delete that names every node removed; what another client put
there meanwhile stops it, and the deletions then go one by one."""

import os
import shutil

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, server_stat, synced, wait_until
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory


@pytest.fixture(autouse=True)
def debug_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mount logs at debug level, which names each folder deleted at once."""
    monkeypatch.setenv("CIRRUS_TEST_MOUNT_DEBUG", "1")


def make_tree(top: os.PathLike) -> list[str]:
    """A folder with a subfolder, files and a symlink; the paths below it."""
    os.makedirs(os.path.join(top, "sub", "deeper"))
    names = ["sub/a.txt", "sub/deeper/b.txt", "c.txt"]
    for name in names:
        with open(os.path.join(top, name), "w") as out:
            out.write(name)
    os.symlink("c.txt", os.path.join(top, "link"))
    return [*names, "sub/deeper", "sub", "link"]


def test_a_tree_deleted_offline_is_deleted_on_the_server_at_once(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    top = drive.path / "project"
    below = make_tree(top)
    wait_until(lambda: synced(top / "c.txt") and synced(top / "sub/deeper/b.txt"))
    server.stop()  # the deletions wait in the journal and travel in one batch
    shutil.rmtree(top)
    server.start()
    wait_until(lambda: server_stat(server, drive_user, "/project") is None, 30)
    log = drive.log_path.read_text()
    assert f"deleting /project with {len(below)} names below it at once" in log
    with server.client(drive_user) as client:
        items = client.get("/v1/trash").json()["items"]
    assert [item["path"] for item in items] == ["/project"]
    assert not top.exists()


def test_a_tree_of_hundreds_of_names_goes_in_one_operation(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """More names than a batch of other entries holds: deletions travel in larger batches."""
    drive = mount_factory("a")
    top = drive.path / "big"
    below = []
    for folder in ("one", "two", "three"):
        os.makedirs(top / folder)
        for n in range(90):
            (top / folder / f"{n}.txt").write_text(f"{folder} {n}")
            below.append(f"{folder}/{n}.txt")
        below.append(folder)
    wait_until(lambda: synced(top / "three" / "89.txt"), 60)  # the journal goes in order
    server.stop()
    shutil.rmtree(top)
    server.start()
    wait_until(lambda: server_stat(server, drive_user, "/big") is None, 60)
    assert f"deleting /big with {len(below)} names below it at once" in drive.log_path.read_text()


def test_what_another_client_added_stops_the_deletion_at_once(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    top = drive.path / "project"
    make_tree(top)
    wait_until(lambda: synced(top / "c.txt") and synced(top / "sub/deeper/b.txt"))
    server.stop()
    shutil.rmtree(top)
    drive.kill9()  # the journal keeps the deletions for the next mount
    server.start()
    with server.client(drive_user) as client:  # meanwhile another client adds a file
        answer = client.post(
            "/v1/files",
            params={"uploadType": "media", "path": "/project/sub/new.txt"},
            content=b"added elsewhere",
        )
        answer.raise_for_status()
    drive.mount()
    wait_until(lambda: server_stat(server, drive_user, "/project/c.txt") is None, 30)
    wait_until(lambda: (top / "sub" / "new.txt").exists(), 30)
    assert server_stat(server, drive_user, "/project/sub/new.txt") is not None
    for gone in ("c.txt", "link", "sub/a.txt", "sub/deeper"):
        assert server_stat(server, drive_user, f"/project/{gone}") is None
    assert sorted(os.listdir(top)) == ["sub"]
    assert os.listdir(top / "sub") == ["new.txt"]
    assert (top / "sub" / "new.txt").read_bytes() == b"added elsewhere"
    assert "holds more on the server" in drive.log_path.read_text()


def test_a_folder_inside_goes_at_once_when_the_whole_tree_cannot(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """A name the server never had (created and deleted offline) cannot be named in a
    joined delete: the tree's top goes name by name, the folder beside it at once."""
    drive = mount_factory("a")
    top = drive.path / "project"
    make_tree(top)
    wait_until(lambda: synced(top / "c.txt") and synced(top / "sub/deeper/b.txt"))
    server.stop()
    (top / "draft.txt").write_text("never sent")
    shutil.rmtree(top)
    server.start()
    wait_until(lambda: server_stat(server, drive_user, "/project") is None, 30)
    log = drive.log_path.read_text()
    assert "deleting /project with" not in log
    assert "deleting /project/sub with 3 names below it at once" in log
