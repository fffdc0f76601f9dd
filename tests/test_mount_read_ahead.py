"""Sequential reads of content the mount does not hold yet, through real mounts: the kernel
reads ahead in 1 MiB requests, and the mount fetches the coming blocks in batches whatever
order the kernel's requests arrive in."""

import os
import random
from pathlib import Path

import pytest

from mountfs.readahead import READ_AHEAD_KB, setting_path
from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, synced, wait_until
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory

SIZE = 24 * 1024 * 1024  # about 48 blocks: more than one read-ahead window
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root may set the read-ahead")


def read_ahead_kb(mountpoint: Path) -> int:
    with open(setting_path(str(mountpoint))) as setting:
        return int(setting.read())


@as_root
def test_a_mount_run_by_root_reads_ahead_a_whole_request(mount_factory: MountFactory) -> None:
    drive = mount_factory("a")
    wait_until(lambda: read_ahead_kb(drive.path) == READ_AHEAD_KB)


def _requests(server: ServerProcess, start: int) -> list[str]:
    with open(server.log_path, "rb") as log:
        log.seek(start)
        return [
            line for line in log.read().decode().splitlines() if '"GET ' in line or '"POST ' in line
        ]


@as_root
def test_reads_the_kernel_sends_together_are_fetched_ahead_in_batches(
    mount_factory: MountFactory, server: ServerProcess
) -> None:
    """With a read-ahead of several requests the kernel sends the next ranges before the
    first is answered; each is still a sequential read that fetches ahead, so no block is
    fetched on its own but the first."""
    content = random.Random(3).randbytes(SIZE)
    writer, reader = mount_factory("writer"), mount_factory("reader")
    (writer.path / "video.bin").write_bytes(content)
    wait_until(lambda: synced(writer.path / "video.bin"), timeout=60)
    copy = reader.path / "video.bin"
    wait_until(lambda: copy.exists() and copy.stat().st_size == SIZE)
    with open(setting_path(str(reader.path)), "w") as setting:
        setting.write(str(4 * READ_AHEAD_KB))

    start = server.log_path.stat().st_size
    with open(copy, "rb") as file:
        read = b"".join(iter(lambda: file.read(1 << 20), b""))
    assert read == content

    requests = _requests(server, start)
    single = [line for line in requests if '"GET /v1/blocks/' in line]
    batches = [line for line in requests if '"POST /v1/blocks/fetch' in line]
    assert len(single) <= 1, requests
    assert batches, requests
