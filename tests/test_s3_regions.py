"""Two S3 regions (two moto servers) behind `--blocks replicated:A|B`: a write is acknowledged
once one region holds it, the durable queue copies it to the other, a region killed during
writes through a mount costs the mount nothing, and `cirrus admin replication verify` finds
and queues whatever a region lost."""

import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountFactory, synced, wait_until
from tests.support.s3 import MotoServer, s3_credentials
from tests.support.server import ServerProcess, cirrus_executable

drive_user = mount_fixtures.drive_user
mount_factory = mount_fixtures.mount_factory

KIB = 1024
MIB = 1024 * KIB
BUCKETS = ("region-a", "region-b")
DRAIN_TIMEOUT_S = 90


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[list[MotoServer]]:
    with (
        s3_credentials(),
        MotoServer(tmp_path / "region-a.log") as a,
        MotoServer(tmp_path / "region-b.log") as b,
    ):
        for region, bucket in zip((a, b), BUCKETS, strict=True):
            region.create_bucket(bucket)
        yield [a, b]


def blocks_url(regions: list[MotoServer]) -> str:
    a, b = (region.store_url(bucket) for region, bucket in zip(regions, BUCKETS, strict=True))
    return f"replicated:{a}|{b}"


@pytest.fixture
def server(tmp_path: Path, regions: list[MotoServer]) -> Iterator[ServerProcess]:
    args = ("--blocks", blocks_url(regions), "--replication-interval", "0.2")
    process = ServerProcess(tmp_path / "server", extra_args=args)
    try:
        yield process.start()
    finally:
        process.stop()
    assert process.errors_logged() == [], process.log_tail()


def admin(server: ServerProcess, regions: list[MotoServer], *args: str) -> str:
    """`cirrus admin replication ...` on the server's data; its output (status 0 asserted)."""
    command = [cirrus_executable(), "admin", "replication", *args, "--data", str(server.data_dir)]
    if args[0] == "verify":
        command += ["--blocks", blocks_url(regions)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def write_tree(root: Path, files: int, seed: str) -> dict[Path, bytes]:
    """Small files of random content in a few folders; returns what was written."""
    written = {}
    for index in range(files):
        path = root / f"dir{index % 4}" / f"{seed}-{index}.bin"
        path.parent.mkdir(exist_ok=True)
        data = os.urandom(48 * KIB + index)
        path.write_bytes(data)
        written[path] = data
    return written


def both_regions_hold_everything(regions: list[MotoServer]) -> bool:
    a, b = (region.keys(bucket) for region, bucket in zip(regions, BUCKETS, strict=True))
    return bool(a) and a == b


def drained(server: ServerProcess, regions: list[MotoServer]) -> bool:
    """Whether the queue is empty (read from the database: cheaper to poll than the CLI,
    whose report assert_verified and the status checks look at)."""
    with contextlib.closing(sqlite3.connect(server.data_dir / "metadata.db", timeout=10)) as db:
        return db.execute("SELECT count(*) FROM replication_queue").fetchone()[0] == 0


def assert_verified(server: ServerProcess, regions: list[MotoServer]) -> None:
    report = admin(server, regions, "verify")
    assert report.count(" 0 missing, 0 corrupt, 0 copies queued") == 2, report


def restart_empty(region: MotoServer, bucket: str) -> None:
    """Bring a killed region back (moto forgets everything: a replacement region)."""
    region.start()
    region.create_bucket(bucket)


def test_a_write_reaches_both_regions_through_the_queue(
    server: ServerProcess, regions: list[MotoServer], mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    written = write_tree(drive.path, 12, "w")
    for path in written:
        wait_until(lambda p=path: synced(p), timeout=60)
    wait_until(lambda: both_regions_hold_everything(regions), timeout=DRAIN_TIMEOUT_S, step=0.5)
    wait_until(lambda: drained(server, regions), timeout=DRAIN_TIMEOUT_S, step=0.5)
    assert "nothing owed" in admin(server, regions, "status")
    assert_verified(server, regions)


def test_secondary_killed_during_writes(
    server: ServerProcess, regions: list[MotoServer], mount_factory: MountFactory
) -> None:
    drive = mount_factory("a")
    written = write_tree(drive.path, 8, "before")
    regions[1].kill()
    written |= write_tree(drive.path, 8, "during")
    big = drive.path / "big.bin"
    written[big] = os.urandom(16 * MIB)
    big.write_bytes(written[big])
    for path in written:
        wait_until(lambda p=path: synced(p), timeout=60)  # the mount saw no error
    owed = admin(server, regions, "status")
    assert BUCKETS[1] in owed and "copy" in owed, owed

    restart_empty(regions[1], BUCKETS[1])
    admin(server, regions, "verify")  # queues what the replacement region lacks
    wait_until(lambda: both_regions_hold_everything(regions), timeout=DRAIN_TIMEOUT_S, step=0.5)
    wait_until(lambda: drained(server, regions), timeout=DRAIN_TIMEOUT_S, step=0.5)
    assert_verified(server, regions)
    for path, data in written.items():
        assert path.read_bytes() == data


def test_primary_killed_reads_and_writes_go_on(
    server: ServerProcess, regions: list[MotoServer], mount_factory: MountFactory
) -> None:
    writer = mount_factory("a")
    written = write_tree(writer.path, 8, "before")
    for path in written:
        wait_until(lambda p=path: synced(p), timeout=60)
    wait_until(lambda: drained(server, regions), timeout=DRAIN_TIMEOUT_S, step=0.5)

    regions[0].kill()
    reader = mount_factory("b")  # an empty cache: every block comes from the secondary
    for path, data in written.items():
        assert (reader.path / path.relative_to(writer.path)).read_bytes() == data
    fresh = write_tree(writer.path, 6, "during")
    for path in fresh:
        wait_until(lambda p=path: synced(p), timeout=60)
    for path, data in fresh.items():
        copy = reader.path / path.relative_to(writer.path)
        wait_until(lambda c=copy, d=data: c.exists() and c.read_bytes() == d, timeout=30)
    owed = admin(server, regions, "status")
    assert BUCKETS[0] in owed, owed  # written to the secondary, owed to the primary

    started = time.monotonic()
    restart_empty(regions[0], BUCKETS[0])
    admin(server, regions, "verify")
    wait_until(lambda: both_regions_hold_everything(regions), timeout=DRAIN_TIMEOUT_S, step=0.5)
    wait_until(lambda: drained(server, regions), timeout=DRAIN_TIMEOUT_S, step=0.5)
    assert time.monotonic() - started < DRAIN_TIMEOUT_S
    assert_verified(server, regions)


def all_synced(root: Path) -> bool:
    return all(synced(path) for path in root.rglob("*") if path.is_file())


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("down", [1, 0], ids=["secondary", "primary"])
def test_a_region_down_during_a_django_untar_and_256_mib(
    server: ServerProcess, regions: list[MotoServer], mount_factory: MountFactory, down: int
) -> None:
    from bench.source_tree import fetch_tarball

    tarball = fetch_tarball(Path.home() / ".cache" / "cirrus-bench")
    drive = mount_factory("a")
    untar = subprocess.Popen(["tar", "-xf", str(tarball), "-C", str(drive.path)])
    try:
        time.sleep(2)
        # In the middle of the untar the region stops answering (frozen: its connections
        # hang, which is harder than a refusal) and comes back, data intact, at the end.
        regions[down].pause()
        big = os.urandom(256 * MIB)
        (drive.path / "big.bin").write_bytes(big)
        assert untar.wait(600) == 0  # the mount saw no error
        wait_until(lambda: all_synced(drive.path), timeout=900, step=2)
        assert not drained(server, regions)  # copies are owed to the frozen region
    finally:
        regions[down].resume()
        if untar.poll() is None:
            untar.kill()
    wait_until(lambda: drained(server, regions), timeout=900, step=2)
    assert_verified(server, regions)
    reader = mount_factory("b")
    assert (reader.path / "big.bin").read_bytes() == big
