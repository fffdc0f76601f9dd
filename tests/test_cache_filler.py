"""Filling the block cache from uploaded files in the background (cache/filler.py)."""

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.protocol.hashing import block_hash
from cache import filler
from cache.blockcache import BlockCache
from tests.support.mount import wait_until

KIB = 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def source_file(tmp_path: Path, count: int = 3) -> tuple[Path, list[tuple[int, int, str]]]:
    """A file of `count` blocks and their ranges, as an upload hands them over."""
    rng = random.Random(count)
    blocks = [rng.randbytes(100 * KIB + i) for i in range(count)]
    path = tmp_path / "dirty"
    path.write_bytes(b"".join(blocks))
    ranges, offset = [], 0
    for data in blocks:
        ranges.append((offset, len(data), block_hash(data)))
        offset += len(data)
    return path, ranges


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[BlockCache]:
    blocks = BlockCache(tmp_path / "blocks", max_bytes=1024 * KIB)
    yield blocks
    blocks.close()


def test_blocks_are_copied_once_uploads_are_quiet_even_from_a_deleted_file(
    tmp_path: Path, cache: BlockCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filler, "FILLER_QUIET_S", 0.5)
    path, ranges = source_file(tmp_path)
    data = path.read_bytes()
    before = open_fds()
    fd = cache.filler.open(str(path))
    assert fd is not None
    path.unlink()  # the dirty copy goes once its upload is done
    cache.filler.submit(fd, ranges)
    cache.filler.release(fd)
    assert not any(cache.contains(name) for _o, _s, name in ranges)  # not while uploading
    wait_until(lambda: all(cache.contains(name) for _o, _s, name in ranges))
    for offset, size, name in ranges:
        assert cache.get(name) == data[offset : offset + size]
    wait_until(lambda: open_fds() == before)  # released: closed after its copies


def test_the_filler_runs_at_the_lowest_priority(
    tmp_path: Path, cache: BlockCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filler, "FILLER_QUIET_S", 0.0)
    path, ranges = source_file(tmp_path, count=1)
    fd = cache.filler.open(str(path))
    assert fd is not None
    cache.filler.submit(fd, ranges)
    cache.filler.release(fd)
    wait_until(lambda: cache.contains(ranges[0][2]))
    thread = cache.filler._thread
    assert thread is not None and thread.native_id is not None
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == filler.FILLER_NICE


def test_closing_drops_queued_copies_and_their_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filler, "FILLER_QUIET_S", 3600.0)
    cache = BlockCache(tmp_path / "blocks", max_bytes=1024 * KIB)
    path, ranges = source_file(tmp_path)
    before = open_fds()
    first = cache.filler.open(str(path))
    second = cache.filler.open(str(path))
    assert first is not None and second is not None
    cache.filler.submit(first, ranges)
    cache.filler.release(first)
    cache.filler.submit(second, ranges)
    cache.close()  # an unmount does not wait an hour for quiet
    cache.filler.release(second)  # an upload that ends after the unmount began
    assert open_fds() == before
    assert not any(cache.contains(name) for _o, _s, name in ranges)


def test_a_file_gone_before_its_upload_ended_is_not_cached(
    tmp_path: Path, cache: BlockCache
) -> None:
    assert cache.filler.open(str(tmp_path / "gone")) is None


def test_writes_hold_the_copies_off(
    tmp_path: Path, cache: BlockCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the mount is written to, the copies wait: they would take the disk from it."""
    monkeypatch.setattr(filler, "FILLER_QUIET_S", 0.3)
    path, ranges = source_file(tmp_path)
    fd = cache.filler.open(str(path))
    assert fd is not None
    cache.filler.submit(fd, ranges)
    cache.filler.release(fd)
    for _ in range(10):  # a writer going on for a second
        cache.filler.hold_off()
        time.sleep(0.1)
        assert not any(cache.contains(name) for _o, _s, name in ranges)
    wait_until(lambda: all(cache.contains(name) for _o, _s, name in ranges))
