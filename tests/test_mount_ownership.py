"""Owners, times, special files and hard links on a real mount, and their sync.

One mount serves the module (a fresh folder per test), with `--allow-other` so that other
users reach it at all; a second mount of the same drive checks what reaches other machines.
Access checks are the kernel's (default_permissions), so the tests act as another user
through subprocesses started with that uid.
"""

import errno
import os
import stat
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.protocol.paths import PATH_MAX
from tests.support.mount import MountProcess, module_drive, server_stat, wait_until
from tests.support.server import ServerProcess

NOBODY = 65534


@pytest.fixture(scope="module")
def env(
    shared_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MountProcess, str, ServerProcess]]:
    base = tmp_path_factory.mktemp("owners")
    with module_drive(shared_server, base, "owners", ("--allow-other",)) as drive_env:
        yield drive_env


@pytest.fixture
def d(env: tuple, request: pytest.FixtureRequest) -> Path:
    folder = env[0].path / request.node.name[:60]
    folder.mkdir()
    folder.chmod(0o777)
    return folder


def _errno_of(call, *args) -> int:
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


def _as_nobody(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", script], cwd=cwd, user=NOBODY, group=NOBODY, capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip


def _server_path(env: tuple, path: Path) -> str:
    return "/" + str(path.relative_to(env[0].path))


def test_new_nodes_belong_to_their_maker_and_access_follows(d: Path) -> None:
    made = _as_nobody("echo x > mine && mkdir sub && chmod 600 mine", d)
    assert made.returncode == 0, made.stderr
    assert ((d / "mine").stat().st_uid, (d / "mine").stat().st_gid) == (NOBODY, NOBODY)
    assert (d / "sub").stat().st_uid == NOBODY
    (d / "root-only").write_text("secret")
    (d / "root-only").chmod(0o600)
    assert _as_nobody("cat root-only", d).returncode != 0  # the kernel refused: not the owner
    assert _as_nobody("cat mine", d).stdout == "x\n"


def test_chown_rules_and_ctime(d: Path) -> None:
    path = d / "f"
    path.write_text("x")
    path.chmod(0o6755)
    before = path.stat().st_ctime_ns
    time.sleep(0.01)
    os.chown(path, NOBODY, NOBODY)
    info = path.stat()
    assert (info.st_uid, info.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(info.st_mode) == 0o755  # chown cleared setuid and setgid
    assert info.st_ctime_ns > before
    refused = _as_nobody("chown 0 f", d)  # only root gives a file away
    assert refused.returncode != 0 and path.stat().st_uid == NOBODY
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    assert (path.stat().st_atime_ns, path.stat().st_mtime_ns) == (1_000_000_000, 2_000_000_000)


def test_folder_times_follow_their_entries(d: Path) -> None:
    before = d.stat()
    time.sleep(0.01)
    (d / "a").write_text("a")
    after = d.stat()
    assert after.st_mtime_ns > before.st_mtime_ns and after.st_ctime_ns > before.st_ctime_ns
    time.sleep(0.01)
    os.rename(d / "a", d / "b")
    assert d.stat().st_mtime_ns > after.st_mtime_ns
    assert (d / "b").stat().st_ctime_ns > after.st_ctime_ns


def test_setgid_folders_give_their_group(d: Path) -> None:
    os.chown(d, 0, NOBODY)
    d.chmod(0o2777)
    (d / "f").write_text("x")
    os.mkdir(d / "sub")
    assert (d / "f").stat().st_gid == NOBODY
    assert (d / "sub").stat().st_gid == NOBODY
    assert (d / "sub").stat().st_mode & stat.S_ISGID


def test_special_files(d: Path, env: tuple) -> None:
    os.mkfifo(d / "fifo", 0o640)
    os.mknod(d / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(d / "disk", 0o660 | stat.S_IFBLK, os.makedev(8, 1))
    assert stat.S_ISFIFO((d / "fifo").stat().st_mode)
    assert stat.S_IMODE((d / "fifo").stat().st_mode) == 0o640
    null = (d / "null").stat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert os.minor(null.st_rdev) == 3
    assert stat.S_ISBLK((d / "disk").stat().st_mode)
    node = wait_until(lambda: server_stat(env[2], env[1], _server_path(env, d / "null")))
    assert (node["type"], node["rdev"]) == ("chr", os.makedev(1, 3))


def test_hard_links(d: Path, env: tuple) -> None:
    (d / "a").write_text("one")
    os.mkdir(d / "sub")
    os.link(d / "a", d / "b")
    os.link(d / "a", d / "sub" / "c")
    assert (d / "a").stat().st_nlink == 3
    assert (d / "a").stat().st_ino == (d / "sub" / "c").stat().st_ino
    (d / "b").write_text("two")  # content belongs to the file, whatever its name
    assert (d / "sub" / "c").read_text() == "two"
    os.rename(d / "b", d / "sub" / "c")  # onto another name of the same file: nothing
    assert sorted(os.listdir(d)) == ["a", "b", "sub"]
    os.unlink(d / "a")
    assert (d / "b").stat().st_nlink == 2 and (d / "b").read_text() == "two"
    server = env[2]
    file = wait_until(  # the unlink of "a" reached the server: "b" holds the file now
        lambda: (
            (node := server_stat(server, env[1], _server_path(env, d / "b")))
            and node["type"] == "file"
            and node
        )
    )
    link = server_stat(server, env[1], _server_path(env, d / "sub" / "c"))
    assert link["type"] == "hardlink"
    assert server_stat(server, env[1], _server_path(env, d / "a")) is None
    assert (file["type"], file["nlink"], link["link_id"]) == ("file", 2, file["id"])


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A system.posix_acl_access value: (tag, permissions, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_posix_acls_are_kept_enforced_and_set_the_mode(d: Path, env: tuple) -> None:
    path = d / "f"
    path.write_text("acl")
    path.chmod(0o600)
    owner, user, group, mask, other = 0x01, 0x02, 0x04, 0x10, 0x20
    named = _acl((owner, 6, 0), (user, 4, NOBODY), (group, 0, 0), (mask, 4, 0), (other, 0, 0))
    os.setxattr(path, "system.posix_acl_access", named)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the mask shows as the group's bits
    assert _as_nobody("cat f", d).stdout == "acl"  # the kernel enforces the named entry
    plain = _acl((owner, 6, 0), (group, 4, 0), (other, 4, 0))
    os.setxattr(path, "system.posix_acl_access", plain)  # just a mode: not kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "system.posix_acl_access" not in os.listxattr(path)
    os.setxattr(path, "system.posix_acl_access", named)
    node = wait_until(
        lambda: (
            (n := server_stat(env[2], env[1], _server_path(env, path)))
            and "system.posix_acl_access" in n["xattrs"]
            and n
        )
    )
    assert node["mode"] == 0o640


def test_bad_input_gets_an_errno_and_changes_nothing(d: Path) -> None:
    os.mkdir(d / "dir")
    (d / "f").write_text("x")
    assert _errno_of(os.link, d / "dir", d / "dir2") == errno.EPERM
    assert _errno_of(os.link, d / "f", d / ("n" * 256)) == errno.ENAMETOOLONG
    assert _errno_of(os.mkfifo, d / ("n" * 256)) == errno.ENAMETOOLONG
    made = _as_nobody("mknod dev c 1 3", d)
    assert made.returncode != 0 and "not permitted" in made.stderr
    os.chown(d / "dir", 4_000_000, 4_000_001)  # ids no account has: kept as numbers
    assert (d / "dir").stat().st_uid == 4_000_000
    started = time.monotonic()
    assert _errno_of(os.truncate, d / "f", 10**15) == errno.EFBIG
    assert time.monotonic() - started < 5
    started = time.monotonic()  # fallocate(2): refused at once (pyfuse3 has no handler)
    allocated = subprocess.run(["fallocate", "-l", str(10**15), str(d / "f")], check=False)
    assert allocated.returncode != 0 and time.monotonic() - started < 5
    assert (d / "f").read_text() == "x" and (d / "f").stat().st_size == 1
    assert sorted(os.listdir(d)) == ["dir", "f"]


def test_a_path_longer_than_the_drive_keeps_is_refused_at_once(d: Path, env: tuple) -> None:
    """Names relative to folder descriptors: the full local path is over the kernel's
    PATH_MAX long before the drive's path is."""
    server_path, fd = _server_path(env, d), os.open(d, os.O_RDONLY)
    try:
        while (room := PATH_MAX - len(server_path.encode()) - 1) > 200:  # ends at 100 bytes
            name = "x" * min(250, room - 101)
            os.mkdir(name, dir_fd=fd)
            fd, parent = os.open(name, os.O_RDONLY, dir_fd=fd), fd
            os.close(parent)
            server_path += "/" + name
        fits, too_long = "y" * room, "z" * (room + 1)
        os.close(os.open(fits, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        assert _errno_of(lambda: os.mkdir(too_long, dir_fd=fd)) == errno.ENAMETOOLONG
        with pytest.raises(OSError) as refused:
            os.rename(fits, too_long, src_dir_fd=fd, dst_dir_fd=fd)
        assert refused.value.errno == errno.ENAMETOOLONG
        assert os.listdir(fd) == [fits]
    finally:
        os.close(fd)
    assert wait_until(lambda: server_stat(env[2], env[1], server_path + "/" + fits))


def test_a_second_mount_sees_owners_links_and_special_files(
    d: Path, env: tuple, tmp_path: Path
) -> None:
    (d / "a").write_text("shared")
    os.chown(d / "a", NOBODY, NOBODY)
    os.link(d / "a", d / "b")
    os.mkfifo(d / "p")
    wait_until(lambda: server_stat(env[2], env[1], _server_path(env, d / "p")))
    _drive, token, server = env
    with MountProcess(server.url, token, tmp_path / "mnt", tmp_path / "cache") as other:
        there = other.path / d.name
        wait_until(lambda: (there / "b").exists(), timeout=20)
        a, b = (there / "a").stat(), (there / "b").stat()
        assert (a.st_uid, a.st_gid, a.st_nlink) == (NOBODY, NOBODY, 2)
        assert a.st_ino == b.st_ino and (there / "b").read_text() == "shared"
        assert stat.S_ISFIFO((there / "p").stat().st_mode)
        assert other.errors_logged() == []
