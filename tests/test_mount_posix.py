"""POSIX behaviour of a real mount: the calls and the errno values Linux filesystems give.

One mount serves the whole module (a fresh folder per test), so the suite stays fast; the
module's end checks that the mount logged no unexpected error.
"""

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mount import MountProcess, module_drive, server_file, server_stat, wait_until
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def posix_env(
    shared_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MountProcess, str, ServerProcess]]:
    with module_drive(shared_server, tmp_path_factory.mktemp("posix"), "posix") as env:
        yield env


@pytest.fixture
def d(posix_env: tuple, request: pytest.FixtureRequest) -> Path:
    """A fresh folder on the mount for one test."""
    folder = posix_env[0].path / request.node.name[:60]
    folder.mkdir()
    return folder


def _errno_of(call, *args) -> int:
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


def test_create_write_read_and_stat(d: Path) -> None:
    path = d / "a.txt"
    path.write_bytes(b"hello")
    with open(path, "ab") as file:
        file.write(b" world")
    assert path.read_bytes() == b"hello world"
    info = path.stat()
    assert stat.S_ISREG(info.st_mode)
    assert info.st_size == 11
    assert info.st_uid == os.getuid()
    assert sorted(os.listdir(d)) == ["a.txt"]


def test_random_access_writes_and_sparse_extension(d: Path) -> None:
    path = d / "r.bin"
    with open(path, "w+b") as file:
        file.write(b"a" * 10)
        file.seek(100)
        file.write(b"b")
        file.seek(5)
        file.write(b"XY")
        file.flush()
        file.seek(0)
        assert file.read() == b"aaaaaXYaaa" + b"\0" * 90 + b"b"
    assert path.stat().st_size == 101


def test_truncate_and_chmod_and_utime(d: Path) -> None:
    path = d / "t.txt"
    path.write_bytes(b"0123456789")
    os.truncate(path, 4)
    assert path.read_bytes() == b"0123"
    os.truncate(path, 6)
    assert path.read_bytes() == b"0123\0\0"
    os.chmod(path, 0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.utime(path, ns=(1_000_000_000, 1_500_000_000_123))
    assert path.stat().st_mtime_ns == 1_500_000_000_123


def test_directories_and_their_errors(d: Path) -> None:
    (d / "sub").mkdir()
    (d / "sub" / "f").write_text("x")
    assert _errno_of(os.mkdir, d / "sub") == errno.EEXIST
    assert _errno_of(os.rmdir, d / "sub") == errno.ENOTEMPTY
    assert _errno_of(os.rmdir, d / "sub" / "f") == errno.ENOTDIR
    assert _errno_of(os.unlink, d / "sub") == errno.EISDIR
    assert _errno_of(os.listdir, d / "sub" / "f") == errno.ENOTDIR
    assert _errno_of(open, d / "sub" / "f" / "x", "w") == errno.ENOTDIR
    assert _errno_of(os.stat, d / "missing") == errno.ENOENT
    assert _errno_of(open, d / "missing" / "x", "w") == errno.ENOENT
    assert _errno_of(open, d / "sub", "w") == errno.EISDIR
    assert _errno_of(os.open, d / "sub" / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    os.unlink(d / "sub" / "f")
    os.rmdir(d / "sub")
    assert os.listdir(d) == []


def test_name_too_long(d: Path) -> None:
    assert _errno_of(open, d / ("n" * 256), "w") == errno.ENAMETOOLONG
    assert _errno_of(os.mkdir, d / ("n" * 256)) == errno.ENAMETOOLONG
    (d / ("n" * 255)).write_text("ok")
    assert (d / ("n" * 255)).read_text() == "ok"


def test_rename_replace_noreplace_exchange(d: Path) -> None:
    (d / "a").write_text("A")
    (d / "b").write_text("B")
    os.rename(d / "a", d / "b")
    assert (d / "b").read_text() == "A"
    assert not (d / "a").exists()
    (d / "dir").mkdir()
    (d / "dir2").mkdir()
    (d / "dir2" / "x").write_text("x")
    assert _errno_of(os.rename, d / "b", d / "dir") == errno.EISDIR
    assert _errno_of(os.rename, d / "dir", d / "b") == errno.ENOTDIR
    assert _errno_of(os.rename, d / "dir", d / "dir2") == errno.ENOTEMPTY
    assert _errno_of(os.rename, d / "dir", d / "dir" / "inside") == errno.EINVAL
    os.rename(d / "dir2", d / "dir")  # onto an empty folder
    assert os.listdir(d / "dir") == ["x"]
    renameat2 = _renameat2()
    (d / "c").write_text("C")
    assert renameat2(d / "c", d / "b", 1) == errno.EEXIST  # RENAME_NOREPLACE
    assert renameat2(d / "c", d / "b", 2) == 0  # RENAME_EXCHANGE
    assert (d / "b").read_text() == "C"
    assert (d / "c").read_text() == "A"


def _renameat2():
    """renameat2(2) through libc (Python has no binding); answers 0 or the errno."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100

    def call(src: Path, dst: Path, flags: int) -> int:
        result = libc.renameat2(at_fdcwd, bytes(src), at_fdcwd, bytes(dst), flags)
        return 0 if result == 0 else ctypes.get_errno()

    return call


def test_symlinks(d: Path) -> None:
    (d / "target.txt").write_text("T")
    os.symlink("target.txt", d / "link")
    assert os.readlink(d / "link") == "target.txt"
    assert (d / "link").read_text() == "T"
    assert stat.S_ISLNK(os.lstat(d / "link").st_mode)
    assert _errno_of(os.readlink, d / "target.txt") == errno.EINVAL


def test_unlinked_open_file_stays_readable(d: Path) -> None:
    path = d / "open.txt"
    path.write_text("still here")
    with open(path, "rb") as file:
        os.unlink(path)
        assert not path.exists()
        assert file.read() == b"still here"
    with open(d / "w.txt", "w+b") as file:
        os.unlink(d / "w.txt")
        file.write(b"written after unlink")
        file.seek(0)
        assert file.read() == b"written after unlink"
    assert os.listdir(d) == []


def test_xattrs(d: Path, posix_env: tuple) -> None:
    path = d / "x.txt"
    path.write_text("x")
    os.setxattr(path, "user.color", b"red")
    assert os.getxattr(path, "user.color") == b"red"
    assert "user.color" in os.listxattr(path)
    assert _errno_of(os.getxattr, path, "user.none") == errno.ENODATA
    assert _errno_of(os.getxattr, path, "security.capability") == errno.ENODATA
    assert _errno_of(os.setxattr, path, "os2.x", b"1") == errno.EOPNOTSUPP
    assert _errno_of(os.setxattr, path, "user.cirrus.status", b"synced") == errno.EPERM
    os.removexattr(path, "user.color")
    assert _errno_of(os.getxattr, path, "user.color") == errno.ENODATA
    os.setxattr(path, "user.tag", b"kept")
    drive, token, server = posix_env
    server_path = "/" + str(path.relative_to(drive.path))
    wait_until(
        lambda: "user.tag" in (server_stat(server, token, server_path) or {}).get("xattrs", {})
    )


def test_status_xattr_goes_from_pending_to_synced(d: Path, posix_env) -> None:
    drive, token, server = posix_env
    path = d / "s.txt"
    path.write_bytes(b"status")
    assert os.getxattr(path, "user.cirrus.status") in (b"pending", b"synced")
    wait_until(lambda: os.getxattr(path, "user.cirrus.status") == b"synced")
    server_path = "/" + str(path.relative_to(drive.path))
    assert server_file(server, token, server_path) == b"status"


def test_statfs_is_sane(posix_env: tuple) -> None:
    info = os.statvfs(posix_env[0].path)
    assert info.f_bsize > 0
    assert 0 < info.f_bavail <= info.f_blocks
    assert info.f_namemax == 255
