"""Quotas seen from a mount: `df` shows the quota, and a mount that hits it answers EDQUOT,
keeps the data in its cache, shows over-quota, and uploads it once space is freed."""

import errno
import os
import subprocess

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, server_file, wait_until
from tests.support.server import COMMAND_TIMEOUT_S, ServerProcess, cirrus_executable

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory

KIB, MIB = 1024, 1024 * 1024


def set_quota(server: ServerProcess, size: str) -> None:
    command = [cirrus_executable(), "admin", "set-quota", "alice", size]
    subprocess.run(
        [*command, "--data", str(server.data_dir)], check=True, timeout=COMMAND_TIMEOUT_S
    )


def df(path) -> tuple[int, int]:
    """(total, free) bytes as `df` shows them."""
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize, info.f_bavail * info.f_frsize


def status(path) -> bytes:
    return os.getxattr(path, "user.cirrus.status")


def test_df_shows_the_quota_and_a_full_mount_keeps_its_data(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    set_quota(server, "2M")
    drive = mount_factory("a")
    root = drive.path
    wait_until(lambda: df(root) == (2 * MIB, 2 * MIB), timeout=10)
    first = os.urandom(MIB)
    (root / "first.bin").write_bytes(first)
    wait_until(lambda: status(root / "first.bin") == b"synced", timeout=20)
    wait_until(lambda: df(root) == (2 * MIB, MIB), timeout=10)

    second = os.urandom(1536 * KIB)
    (root / "second.bin").write_bytes(second)
    wait_until(lambda: status(root / "second.bin") == b"over-quota", timeout=20)
    more = os.urandom(10 * KIB)
    fd = os.open(root / "second.bin", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, more)
        with pytest.raises(OSError) as fsync_error:
            os.fsync(fd)
        assert fsync_error.value.errno == errno.EDQUOT
    finally:
        with pytest.raises(OSError) as close_error:
            os.close(fd)
    assert close_error.value.errno == errno.EDQUOT
    assert (root / "second.bin").read_bytes() == second + more
    assert server_file(server, drive_user, "/second.bin") is None
    drive.unmount()  # the refused upload stays in the cache's journal
    drive.mount()
    wait_until(lambda: status(root / "second.bin") == b"over-quota", timeout=20)
    assert (root / "second.bin").read_bytes() == second + more

    with server.client(drive_user) as client:  # free space: delete, then purge the trash
        client.post("/v1/tree/delete", json={"path": "/first.bin"}).raise_for_status()
        client.post("/v1/trash/purge", json={"all": True}).raise_for_status()
    wait_until(lambda: server_file(server, drive_user, "/second.bin") == second + more, 30)
    wait_until(lambda: status(root / "second.bin") == b"synced", timeout=10)
    assert not (root / "first.bin").exists()
    wait_until(lambda: df(root)[1] == 2 * MIB - len(second + more) // 4096 * 4096 - 4096, 10)
