"""A mount that was offline while the server trimmed its journal past the mount's cursor:
it gets 410, re-syncs from a snapshot, and keeps the changes it made offline (replayed on
top, a conflict as a conflicted copy)."""

import os

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, server_file, server_stat, synced, wait_until
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory


def test_an_offline_mount_recovers_from_a_trimmed_journal(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    root = drive.path
    (root / "dir").mkdir()
    for name, text in (("shared.txt", "base"), ("doomed.txt", "x"), ("dir/moved.txt", "m")):
        (root / name).write_text(text)
    wait_until(lambda: all(synced(root / n) for n in ("shared.txt", "dir/moved.txt")), 20)
    server.stop()
    (root / "offline.txt").write_text("written offline")
    (root / "shared.txt").write_text("mine")
    drive.unmount()  # the server is down: both stay in the mount's journal

    server.extra_args = ("--journal-days", "0", "--journal-interval", "0.2")
    server.start()
    with server.client(drive_user, device="other") as other:
        upload = {"uploadType": "media", "path": "/shared.txt"}
        other.post("/v1/files", params=upload, content=b"theirs").raise_for_status()
        upload["path"] = "/fresh.txt"
        other.post("/v1/files", params=upload, content=b"new").raise_for_status()
        other.post("/v1/tree/delete", json={"path": "/doomed.txt"}).raise_for_status()
        move = {"from": "/dir/moved.txt", "to": "/dir/renamed.txt"}
        other.post("/v1/tree/move", json=move).raise_for_status()
        latest = other.get("/v1/account").raise_for_status().json()["cursor"]

        def trimmed():
            return other.get("/v1/changes", params={"cursor": latest - 1}).status_code

        wait_until(lambda: trimmed() == 410, timeout=10)
    server.stop()
    server.extra_args = ()
    server.start()

    drive.mount()
    wait_until(lambda: (root / "fresh.txt").exists(), timeout=20)
    wait_until(lambda: not (root / "doomed.txt").exists(), timeout=10)
    assert (root / "fresh.txt").read_text() == "new"
    assert sorted(os.listdir(root / "dir")) == ["renamed.txt"]
    assert (root / "dir" / "renamed.txt").read_text() == "m"
    # The offline changes reached the server on top of the snapshot.
    wait_until(lambda: server_file(server, drive_user, "/offline.txt") == b"written offline")
    assert (root / "offline.txt").read_text() == "written offline"

    def copies():
        return [n for n in os.listdir(root) if n.startswith("shared (")]

    wait_until(copies, timeout=10)
    (copy,) = copies()
    assert "conflicted copy" in copy
    assert (root / copy).read_text() == "mine"
    assert server_file(server, drive_user, f"/{copy}") == b"mine"
    wait_until(lambda: (root / "shared.txt").read_text() == "theirs", timeout=10)
    assert server_stat(server, drive_user, "/doomed.txt") is None
    assert "re-syncing" in drive.log_path.read_text()
