"""Sharing between two users' real mounts: writes on each side seen on the other, the
recipient's rename, read-only refusal (EACCES), and a revocation while the recipient has
unsynced edits (they end as a conflicted copy in the recipient's own drive)."""

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mount import MountProcess, server_file, server_stat, wait_until
from tests.support.server import ServerProcess


@pytest.fixture
def two(server: ServerProcess, tmp_path: Path) -> Iterator[tuple]:
    """(alice's token, alice's mount, bob's token, bob's mount), unmounted afterwards."""
    tokens = [server.create_user(name) for name in ("alice", "bob")]
    drives = [
        MountProcess(server.url, token, tmp_path / f"mnt-{i}", tmp_path / f"cache-{i}")
        for i, token in enumerate(tokens)
    ]
    try:
        for drive in drives:
            drive.mount()
        yield tokens[0], drives[0], tokens[1], drives[1]
    finally:
        for drive in drives:
            drive.unmount()


def share(server: ServerProcess, token: str, path: str, user: str, access: str) -> int:
    with server.client(token) as client:
        answer = client.post("/v1/shares", json={"path": path, "user": user, "access": access})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def share_proj(
    server: ServerProcess, alice_token: str, alice: MountProcess, bob: MountProcess
) -> None:
    """Alice writes /proj/a.txt and shares /proj with bob, read-write; bob's mount shows it."""
    (alice.path / "proj").mkdir()
    (alice.path / "proj" / "a.txt").write_bytes(b"from alice")
    wait_until(lambda: server_file(server, alice_token, "/proj/a.txt") == b"from alice")
    share(server, alice_token, "/proj", "bob", "write")
    wait_until(lambda: read(bob.path / "proj" / "a.txt") == b"from alice", timeout=5)


def test_share_round_trip_and_rename(server: ServerProcess, two: tuple, tmp_path: Path) -> None:
    alice_token, alice, bob_token, bob = two
    share_proj(server, alice_token, alice, bob)
    (bob.path / "proj" / "b.txt").write_bytes(b"from bob")
    wait_until(lambda: read(alice.path / "proj" / "b.txt") == b"from bob", timeout=5)
    (bob.path / "proj").rename(bob.path / "from-alice")
    (alice.path / "proj" / "c.txt").write_bytes(b"later")
    wait_until(lambda: read(bob.path / "from-alice" / "c.txt") == b"later", timeout=5)
    assert sorted(os.listdir(alice.path)) == ["proj"]
    assert sorted(os.listdir(bob.path / "from-alice")) == ["a.txt", "b.txt", "c.txt"]
    # A new device of bob's starts from a snapshot that holds the shared folder too.
    with MountProcess(server.url, bob_token, tmp_path / "mnt-new", tmp_path / "cache-new") as new:
        assert (new.path / "from-alice" / "b.txt").read_bytes() == b"from bob"
        assert sorted(os.listdir(new.path / "from-alice")) == ["a.txt", "b.txt", "c.txt"]


def test_read_only_share_is_eacces(server: ServerProcess, two: tuple) -> None:
    alice_token, alice, bob_token, bob = two
    (alice.path / "docs").mkdir()
    (alice.path / "docs" / "r.txt").write_bytes(b"read me")
    wait_until(lambda: server_file(server, alice_token, "/docs/r.txt") == b"read me")
    share(server, alice_token, "/docs", "bob", "read")
    folder = bob.path / "docs"
    wait_until(lambda: read(folder / "r.txt") == b"read me", timeout=5)
    wait_until(lambda: _refused(lambda: (folder / "new.txt").write_bytes(b"x")), timeout=3)
    for attempt in (
        lambda: (folder / "r.txt").write_bytes(b"changed"),
        lambda: (folder / "sub").mkdir(),
        lambda: (folder / "r.txt").unlink(),
        lambda: (folder / "r.txt").rename(folder / "s.txt"),
    ):
        assert _refused(attempt)
    assert read(folder / "r.txt") == b"read me"
    assert server_file(server, alice_token, "/docs/r.txt") == b"read me"
    assert server_file(server, bob_token, "/docs/new.txt") is None


def _refused(attempt) -> bool:
    try:
        attempt()
    except PermissionError as exc:
        return exc.errno == errno.EACCES
    return False


def test_revoke_with_unsynced_edits(server: ServerProcess, two: tuple) -> None:
    alice_token, alice, bob_token, bob = two
    (alice.path / "team").mkdir()
    (alice.path / "team" / "t.txt").write_bytes(b"original")
    wait_until(lambda: server_file(server, alice_token, "/team/t.txt") == b"original")
    share_id = share(server, alice_token, "/team", "bob", "write")
    wait_until(lambda: read(bob.path / "team" / "t.txt") == b"original", timeout=5)
    server.stop()  # bob's edits stay in his mount's journal
    (bob.path / "team" / "t.txt").write_bytes(b"bob's unsynced edit")
    (bob.path / "team" / "new.txt").write_bytes(b"bob's new file")
    bob.kill9()
    server.start()
    with server.client(alice_token) as client:
        assert client.delete(f"/v1/shares/{share_id}").status_code == 204
    bob.mount()

    def kept() -> Path | None:
        copies = [p for p in bob.path.iterdir() if p.name.startswith("team (")]
        return copies[0] if copies and len(os.listdir(copies[0])) == 2 else None

    copy = wait_until(kept, timeout=10)
    assert "conflicted copy" in copy.name
    assert (copy / "t.txt").read_bytes() == b"bob's unsynced edit"
    assert (copy / "new.txt").read_bytes() == b"bob's new file"
    assert not (bob.path / "team").exists()
    assert server_file(server, bob_token, f"/{copy.name}/t.txt") == b"bob's unsynced edit"
    assert server_file(server, alice_token, "/team/t.txt") == b"original"
    assert server_file(server, alice_token, "/team/new.txt") is None


def test_rm_rf_of_a_folder_holding_a_share_deletes_the_owners_files(
    server: ServerProcess, two: tuple
) -> None:
    """The recipient's `rm -rf` of a folder the share's mount was moved into deletes the
    files inside the share in the owner's drive, then leaves the share, as the names were
    deleted (the whole tree is not sent as one delete: the share's content is elsewhere)."""
    alice_token, alice, bob_token, bob = two
    share_proj(server, alice_token, alice, bob)
    (bob.path / "work").mkdir()
    (bob.path / "work" / "notes.txt").write_bytes(b"bob's")
    (bob.path / "proj").rename(bob.path / "work" / "proj")
    wait_until(lambda: server_file(server, bob_token, "/work/notes.txt") == b"bob's")
    wait_until(lambda: server_stat(server, bob_token, "/work/proj") is not None)
    shutil.rmtree(bob.path / "work")
    wait_until(lambda: server_stat(server, bob_token, "/work") is None, timeout=10)
    assert server_file(server, alice_token, "/proj/a.txt") is None
    assert server_stat(server, alice_token, "/proj")["type"] == "dir"
    wait_until(lambda: os.listdir(alice.path / "proj") == [], timeout=5)
