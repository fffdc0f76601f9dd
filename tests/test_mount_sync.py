"""Synchronisation through real mounts: between clients, delta sync, offline work, crashes."""

import hashlib
import os
import time
from pathlib import Path

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, account, server_file, server_stat, synced, wait_until
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory

MIB = 1024 * 1024


def test_file_written_on_one_mount_is_read_on_another(mount_factory: MountFactory) -> None:
    first, second = mount_factory("a"), mount_factory("b")
    payload = os.urandom(3 * MIB + 17)
    (first.path / "docs").mkdir()
    (first.path / "docs" / "big.bin").write_bytes(payload)
    wait_until(lambda: (second.path / "docs" / "big.bin").exists())
    wait_until(lambda: (second.path / "docs" / "big.bin").stat().st_size == len(payload))
    assert (second.path / "docs" / "big.bin").read_bytes() == payload


def test_change_is_seen_on_the_other_mount_within_a_second(
    mount_factory: MountFactory,
) -> None:
    first, second = mount_factory("a"), mount_factory("b")
    (first.path / "note.txt").write_text("one")
    wait_until(lambda: (second.path / "note.txt").exists())
    wait_until(lambda: (second.path / "note.txt").read_text() == "one")
    for version in ("two", "three, longer"):
        started = time.monotonic()
        (first.path / "note.txt").write_text(version)
        wait_until(lambda v=version: (second.path / "note.txt").read_text() == v, timeout=5)
        assert time.monotonic() - started < 1.0
    started = time.monotonic()
    os.rename(first.path / "note.txt", first.path / "renamed.txt")
    wait_until(lambda: not (second.path / "note.txt").exists(), timeout=5)
    assert (second.path / "renamed.txt").read_text() == "three, longer"
    assert time.monotonic() - started < 1.0
    os.unlink(second.path / "renamed.txt")
    wait_until(lambda: not (first.path / "renamed.txt").exists(), timeout=5)


def _write_random(path: Path, size: int, seed: bytes) -> str:
    """Write `size` pseudo-random bytes in 1 MiB pieces; return their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        for index in range(size // MIB):
            piece = hashlib.shake_256(seed + index.to_bytes(4, "big")).digest(MIB)
            digest.update(piece)
            file.write(piece)
    return digest.hexdigest()


def test_delta_sync_sends_under_one_percent(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory, tmp_path: Path
) -> None:
    size = 200 * MIB
    drive = mount_factory("a")
    path = drive.path / "big.bin"
    _write_random(path, size, b"delta")
    wait_until(lambda: synced(path), timeout=120)
    before = account(server, drive_user)["bytes_received"]
    assert before >= size
    # An editor's save: read the file, insert one byte near the start, write it all back.
    with open(path, "rb") as file:
        head = file.read(1000)
        tail = file.read()
    with open(path, "wb") as file:
        file.write(head + b"!" + tail)
    wait_until(lambda: synced(path), timeout=120)
    sent = account(server, drive_user)["bytes_received"] - before
    assert sent < size // 100, f"{sent} bytes sent for a 1-byte insert"
    wanted = hashlib.sha256(head + b"!" + tail).hexdigest()
    assert hashlib.sha256(server_file(server, drive_user, "/big.bin")).hexdigest() == wanted


def test_server_down_while_writing_then_back(
    server: ServerProcess,
    drive_user: str,
    mount_factory: MountFactory,
) -> None:
    drive = mount_factory("a")
    (drive.path / "before.txt").write_text("before")
    wait_until(lambda: synced(drive.path / "before.txt"))
    server.stop()
    files = {f"dir/file{i}.bin": os.urandom(1000 * i + 1) for i in range(12)}
    (drive.path / "dir").mkdir()
    for name, data in files.items():
        (drive.path / name).write_bytes(data)
    os.rename(drive.path / "before.txt", drive.path / "dir" / "moved.txt")
    assert (drive.path / "dir" / "moved.txt").read_text() == "before"  # cached, offline
    assert os.getxattr(drive.path / "dir" / "file3.bin", "user.cirrus.status") == b"pending"
    server.start()
    for name, data in files.items():
        wait_until(lambda n=name, d=data: server_file(server, drive_user, f"/{n}") == d, 30)
    assert server_file(server, drive_user, "/dir/moved.txt") == b"before"
    assert server_file(server, drive_user, "/before.txt") is None


def test_kill_9_after_close_loses_nothing(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    server.stop()  # keep the data local so the crash happens before any upload
    payload = os.urandom(2 * MIB + 5)
    (drive.path / "precious.bin").write_bytes(payload)
    drive.kill9()
    server.start()
    drive.mount()
    wait_until(lambda: server_file(server, drive_user, "/precious.bin") == payload, 30)
    assert (drive.path / "precious.bin").read_bytes() == payload


def test_unmount_keeps_pending_work_for_the_next_mount(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    server.stop()
    (drive.path / "later.txt").write_text("sent on the next mount")
    started = time.monotonic()
    drive.unmount()
    assert time.monotonic() - started < 20  # bounded flush attempt
    server.start()
    assert server_file(server, drive_user, "/later.txt") is None
    drive.mount()
    wait_until(lambda: server_file(server, drive_user, "/later.txt") == b"sent on the next mount")


def test_conflicting_edits_keep_both_versions(mount_factory: MountFactory) -> None:
    first, second = mount_factory("a"), mount_factory("b")
    (first.path / "shared.txt").write_text("base")
    wait_until(lambda: synced(first.path / "shared.txt"))
    wait_until(lambda: (second.path / "shared.txt").exists())
    wait_until(lambda: (second.path / "shared.txt").read_text() == "base")
    with open(first.path / "shared.txt", "w") as a, open(second.path / "shared.txt", "w") as b:
        a.write("from a")
        b.write("from b")
    names = lambda: sorted(os.listdir(first.path))  # noqa: E731
    wait_until(lambda: len(names()) == 2, timeout=15)
    contents = {(first.path / name).read_text() for name in names()}
    assert contents == {"from a", "from b"}
    assert any("conflicted copy" in name for name in names())


def test_mount_starts_offline_from_a_filled_cache(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    (drive.path / "kept.txt").write_text("cached")
    wait_until(lambda: synced(drive.path / "kept.txt"))
    drive.unmount()
    server.stop()
    drive.mount()  # no server: the mirror and the block cache are enough
    assert (drive.path / "kept.txt").read_text() == "cached"
    (drive.path / "offline.txt").write_text("made offline")
    server.start()
    wait_until(lambda: server_file(server, drive_user, "/offline.txt") == b"made offline", 30)


def test_attributes_set_right_after_writing_reach_the_server(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """tar's pattern: write, chmod (often to the mode the file has), close, set the mtime.
    The commit carries mode and mtime, so the setattrs after it settle with it."""
    drive = mount_factory("a")
    stamps = {f"f{i}.txt": 1_600_000_000_000_000_000 + i * 1_000_000_007 for i in range(20)}
    for name, mtime in stamps.items():
        path = drive.path / name
        with open(path, "w") as file:
            file.write(name)
            os.fchmod(file.fileno(), 0o644 if name != "f3.txt" else 0o600)
        os.utime(path, ns=(mtime, mtime))
    for name, mtime in stamps.items():
        wait_until(lambda n=name: synced(drive.path / n))
        node = server_stat(server, drive_user, f"/{name}")
        assert node["mtime_ns"] == mtime, name
        assert node["mode"] & 0o777 == (0o600 if name == "f3.txt" else 0o644), name
        assert server_file(server, drive_user, f"/{name}") == name.encode()


def test_a_names_former_holder_never_pushes_out_its_current_one(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """The changes feed lists every past state of a node. After a replay, the mount holds the
    final state; applying a past one (a file that held the name `Y` before it was deleted and
    a folder was moved there) must not replace the folder and drop its contents."""
    drive = mount_factory("a")
    root = drive.path
    (root / "Z").mkdir()
    (root / "Z" / "old.txt").write_bytes(b"kept")
    wait_until(lambda: synced(root / "Z" / "old.txt"))
    server.stop()
    (root / "Y").write_bytes(b"short-lived")
    os.unlink(root / "Y")
    os.rename(root / "Z", root / "Y")
    Path("/proc/sys/vm/drop_caches").write_text("2")  # the kernel forgets the folder
    server.start()
    wait_until(lambda: server_stat(server, drive_user, "/Y") is not None, 30)
    (root / "later").mkdir()  # replayed after the pull of the changes above
    wait_until(lambda: server_stat(server, drive_user, "/later") is not None, 30)
    wait_until(lambda: synced(root / "later"))
    assert sorted(os.listdir(root)) == ["Y", "later"]
    assert os.listdir(root / "Y") == ["old.txt"]
    assert (root / "Y" / "old.txt").read_bytes() == b"kept"


def test_names_swapped_by_renames_keep_the_moved_folders_contents(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """A mount that learns of a swap in one pull meets each node's new name still held by
    the other: the folder pushed out of its old name must keep its subtree for its new one
    (it was taken apart: the folder came back empty)."""
    first, second = mount_factory("a"), mount_factory("b")
    (first.path / "a" / "deep").mkdir(parents=True)
    (first.path / "a" / "deep" / "x").write_bytes(b"inside")
    (first.path / "b").write_bytes(b"file")
    wait_until(lambda: (second.path / "a" / "deep" / "x").exists())
    second.unmount()
    os.rename(first.path / "a", first.path / "t")
    os.rename(first.path / "b", first.path / "a")
    os.rename(first.path / "t", first.path / "b")
    wait_until(lambda: server_stat(server, drive_user, "/b/deep/x") is not None, 30)
    wait_until(lambda: synced(first.path / "a"))
    second.mount()
    wait_until(lambda: (second.path / "a").is_file(), 30)
    assert (second.path / "a").read_bytes() == b"file"
    assert (second.path / "b" / "deep" / "x").read_bytes() == b"inside"
    assert second.errors_logged() == []


def test_a_tree_of_small_files_reaches_the_server_whole(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """What `tar -x` does (create, write, chmod, utime per file; folders; symlinks), more
    entries than one batch holds, with renames and deletions mixed in."""
    drive = mount_factory("a")
    files: dict[str, bytes] = {}
    for d in range(30):
        folder = drive.path / f"pkg{d}" / "sub"
        folder.mkdir(parents=True)
        for f in range(12):
            data = os.urandom(50 + 97 * f)
            path = folder / f"m{f}.py"
            path.write_bytes(data)
            os.chmod(path, 0o600 if f % 2 else 0o644)
            os.utime(path, ns=(10**18 + f, 10**18 + f))
            files[f"/pkg{d}/sub/m{f}.py"] = data
        os.symlink("m0.py", folder / "link")
        os.rename(folder / "m1.py", folder / "renamed.py")
        files[f"/pkg{d}/sub/renamed.py"] = files.pop(f"/pkg{d}/sub/m1.py")
        os.unlink(folder / "m2.py")
        del files[f"/pkg{d}/sub/m2.py"]
    for path, data in files.items():  # in the order written
        wait_until(lambda p=path, d=data: server_file(server, drive_user, p) == d, 120)
    wait_until(lambda: server_stat(server, drive_user, "/pkg29/sub/m2.py") is None, 30)
    node = server_stat(server, drive_user, "/pkg7/sub/m3.py")
    assert node is not None and (node["mode"], node["mtime_ns"]) == (0o600, 10**18 + 3)
    link = server_stat(server, drive_user, "/pkg29/sub/link")
    assert link is not None and link["target"] == "m0.py"
    assert server_stat(server, drive_user, "/pkg0/sub/m2.py") is None
    assert server_stat(server, drive_user, "/pkg0/sub/m1.py") is None


def test_refused_entries_in_a_batch_are_reconciled_and_the_rest_sent(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    server.stop()
    (drive.path / "clash").mkdir()
    (drive.path / "clash" / "inside.txt").write_text("refused: its folder is a file there")
    (drive.path / "ok.txt").write_text("fine")
    time.sleep(6)  # the engine now retries every 5 s
    server.start()
    with server.client(drive_user) as other:  # another client takes the name first
        response = other.post(
            "/v1/files", params={"uploadType": "media", "path": "/clash"}, content=b"theirs"
        )
        assert response.status_code == 201, response.text
    wait_until(lambda: server_file(server, drive_user, "/ok.txt") == b"fine", 30)
    wait_until(lambda: (drive.path / "clash").is_file(), 10)
    assert (drive.path / "clash").read_bytes() == b"theirs"
    assert server_file(server, drive_user, "/clash") == b"theirs"


def test_tar_pattern_costs_one_change_per_file_and_folder(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    """GNU tar sets a file's mtime and mode on the open descriptor, before the close that
    journals its upload, and a folder's in two calls after its contents. The upload's commit
    carries the file's (no empty commit of the create first, no setattrs after), and the
    mkdir its folder's: the server journals each node once."""
    drive = mount_factory("a")
    server.stop()  # the whole journal is written before the replay starts
    stamp = 1_600_000_000_000_000_000
    folder = drive.path / "pkg"
    folder.mkdir(mode=0o700)
    for i in range(10):
        fd = os.open(folder / f"m{i}.py", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x" * (i + 1))
        os.utime(fd, ns=(stamp + i, stamp + i))
        os.fchmod(fd, 0o644)
        os.close(fd)
    os.utime(folder, ns=(stamp, stamp))
    os.chmod(folder, 0o755)
    server.start()
    wait_until(lambda: synced(folder / "m9.py") and synced(folder), 30)
    with server.client(drive_user) as client:
        changes = client.get("/v1/changes", params={"cursor": 0}).json()["entries"]
    paths = [change["node"]["path"] for change in changes]
    assert sorted(paths) == ["/pkg"] + [f"/pkg/m{i}.py" for i in range(10)]
    node = server_stat(server, drive_user, "/pkg")
    assert (node["mode"], node["mtime_ns"]) == (0o755, stamp)
    for i in range(10):
        node = server_stat(server, drive_user, f"/pkg/m{i}.py")
        assert (node["mode"], node["mtime_ns"], node["size"]) == (0o644, stamp + i, i + 1)
