"""A mount on a server whose blocks live in S3 (moto's HTTP server): files round-trip, the
bucket holds only ciphertext, identical content is stored once and an edit sends a block,
not the file."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, account, server_file, synced, wait_until
from tests.support.s3 import MotoServer
from tests.support.server import ServerProcess

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory

MIB = 1024 * 1024
MARKER = b"plainly visible marker text "


@pytest.fixture
def server(tmp_path: Path, moto: MotoServer, s3_bucket: str) -> Iterator[ServerProcess]:
    """This module's server keeps its blocks in a fresh moto bucket."""
    process = ServerProcess(tmp_path / "server", extra_args=("--blocks", moto.store_url(s3_bucket)))
    try:
        yield process.start()
    finally:
        process.stop()
    assert process.errors_logged() == [], process.log_tail()


def pseudo_random(size: int, seed: bytes) -> bytes:
    return b"".join(
        hashlib.shake_256(seed + i.to_bytes(4, "big")).digest(MIB) for i in range(size // MIB)
    )


def test_round_trip_dedup_and_delta_sync_on_s3(
    server: ServerProcess,
    drive_user: str,
    mount_factory: MountFactory,
    moto: MotoServer,
    s3_bucket: str,
) -> None:
    writer = mount_factory("a")
    text = MARKER * 40_000  # ~1.1 MiB of compressible text
    data = pseudo_random(8 * MIB, b"s3")
    (writer.path / "docs").mkdir()
    (writer.path / "docs" / "notes.txt").write_bytes(text)
    (writer.path / "data.bin").write_bytes(data)
    for name in ("docs/notes.txt", "data.bin"):
        wait_until(lambda n=name: synced(writer.path / n), timeout=60)

    objects = moto.objects(s3_bucket)
    assert objects and all(key.startswith("blocks/") for key in objects)
    assert not any(MARKER in body for body in objects.values())  # ciphertext at rest
    stored = len(objects)

    # The same content under another name stores no new object.
    (writer.path / "copy.bin").write_bytes(data)
    wait_until(lambda: synced(writer.path / "copy.bin"), timeout=60)
    assert len(moto.objects(s3_bucket)) == stored

    # An insert near the start sends about one block, not the file.
    before = account(server, drive_user)["bytes_received"]
    edited = data[:1000] + b"!" + data[1000:]
    (writer.path / "data.bin").write_bytes(edited)
    wait_until(lambda: synced(writer.path / "data.bin"), timeout=60)
    assert account(server, drive_user)["bytes_received"] - before < 3 * MIB

    # A second mount with an empty cache reads everything back from the bucket.
    reader = mount_factory("b")
    assert (reader.path / "docs" / "notes.txt").read_bytes() == text
    wait_until(lambda: (reader.path / "data.bin").stat().st_size == len(edited), timeout=30)
    assert (reader.path / "data.bin").read_bytes() == edited
    assert (reader.path / "copy.bin").read_bytes() == data
    assert server_file(server, drive_user, "/data.bin") == edited
