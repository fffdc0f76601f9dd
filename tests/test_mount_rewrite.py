"""One file rewritten over and over on a real mount: every close must read back at once.

Whole-file writes of a few sizes, truncations (shrinking and extending) and in-place pwrites
follow each other with short pauses, so the uploads of earlier versions, their commits and
the dropping of dirty copies interleave with the next rewrite; a remount now and then sends
the rest through the journal of the next mount. After every close the file must read back
exactly as written, on the mount itself, and at the end the server must hold the last version.
"""

import os
import random
import time
from pathlib import Path

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, MountProcess, server_file, wait_until
from tests.support.server import ServerProcess
from tests.support.slow import runslow

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory

SIZES = (21, 81, 5000)
PAUSES = (0.0, 0.0, 0.005, 0.02, 0.1)


def rewrite(path: Path, content: bytes, rng: random.Random) -> bytes:
    """Change the file one way or another (closing it); the content it must now have."""
    kind = rng.choice(("write", "write", "truncate", "pwrite"))
    if kind == "write" or not content:
        data = rng.randbytes(rng.choice(SIZES))
        path.write_bytes(data)
        return data
    if kind == "truncate":
        size = rng.choice((0, 10, *SIZES))
        os.truncate(path, size)
        return content[:size] + bytes(max(size - len(content), 0))
    offset = rng.randrange(len(content) + 1)
    data = rng.randbytes(rng.choice(SIZES[:2]))
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    end = offset + len(data)
    return content[:offset] + data + content[end:]


def rewrite_many(
    drive: MountProcess, name: str, times: int, remount_every: int, seed: int
) -> bytes:
    """Rewrite `name` `times` times, checking each version right after its close."""
    rng = random.Random(seed)
    path = drive.path / name
    content = b""
    path.write_bytes(content)
    for step in range(1, times + 1):
        content = rewrite(path, content, rng)
        found = path.read_bytes()
        assert found == content, (
            f"seed {seed} step {step}: read back {len(found)} bytes {found[:12]!r}, "
            f"wrote {len(content)} bytes {content[:12]!r}"
        )
        time.sleep(rng.choice(PAUSES))
        if step % remount_every == 0:
            drive.unmount()
            drive.mount()
            assert path.read_bytes() == content, f"seed {seed} step {step}: after a remount"
    return content


def check_rewrites(
    server: ServerProcess, token: str, drive: MountProcess, times: int, seed: int
) -> None:
    content = rewrite_many(drive, "rewritten.bin", times, remount_every=50, seed=seed)
    path = drive.path / "rewritten.bin"
    wait_until(lambda: os.getxattr(path, "user.cirrus.status") == b"synced", timeout=60)
    assert server_file(server, token, "/rewritten.bin") == content
    assert path.read_bytes() == content


def test_a_file_rewritten_100_times_reads_back_each_version(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    check_rewrites(server, drive_user, mount_factory("a"), 100, seed=random.randrange(1 << 30))


@pytest.mark.slow
@pytest.mark.parametrize("run", range(4))
def test_a_file_rewritten_400_times_reads_back_each_version(
    request: pytest.FixtureRequest,
    server: ServerProcess,
    drive_user: str,
    mount_factory: MountFactory,
    run: int,
) -> None:
    if not runslow(request.config):
        pytest.skip("long run: use --runslow or CIRRUS_RUNSLOW=1")
    check_rewrites(server, drive_user, mount_factory("a"), 400, seed=random.randrange(1 << 30))
