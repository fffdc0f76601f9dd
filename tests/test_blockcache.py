"""The disk block cache: LRU eviction under a byte cap, persistence, integrity, singleflight."""

import os
from pathlib import Path

import pytest
import trio

from backend.protocol.hashing import block_hash
from cache import blockcache
from cache.blockcache import BlockCache

KIB = 1024


def block(seed: int, size: int = 4 * KIB) -> tuple[str, bytes]:
    data = bytes([seed % 256]) * size
    return block_hash(data), data


def files_on_disk(root: Path) -> set[str]:
    return {path.name for path in root.glob("*/*")}


def test_put_get_round_trip_in_fanout_folder(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    name, data = block(1)
    assert cache.get(name) is None
    assert not cache.contains(name)
    cache.put(name, data)
    assert cache.contains(name)
    assert cache.get(name) == data
    assert cache.total_bytes == len(data)
    assert (tmp_path / name[:2] / name).read_bytes() == data


def test_least_recently_used_is_evicted_first(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=3 * 4 * KIB)
    (a, da), (b, db), (c, dc), (d, dd) = (block(i) for i in range(4))
    for name, data in ((a, da), (b, db), (c, dc)):
        cache.put(name, data)
    assert cache.get(a) == da  # a becomes the most recent; b is now the oldest
    cache.put(d, dd)
    assert not cache.contains(b)
    assert all(cache.contains(name) for name in (a, c, d))
    assert files_on_disk(tmp_path) == {a, c, d}


def test_putting_a_cached_block_again_refreshes_it_without_counting_it_twice(
    tmp_path: Path,
) -> None:
    cache = BlockCache(tmp_path, max_bytes=3 * 4 * KIB)
    (a, da), (b, db), (c, dc), (d, dd) = (block(i) for i in range(4))
    for name, data in ((a, da), (b, db), (c, dc), (a, da)):
        cache.put(name, data)
    assert cache.total_bytes == 3 * 4 * KIB
    cache.put(d, dd)
    assert not cache.contains(b)
    assert cache.contains(a)


def test_cap_is_respected_on_disk(tmp_path: Path) -> None:
    cap = 10 * 4 * KIB + 100
    cache = BlockCache(tmp_path, max_bytes=cap)
    for seed in range(50):
        cache.put(*block(seed))
        assert cache.total_bytes <= cap
    on_disk = sum(path.stat().st_size for path in tmp_path.glob("*/*"))
    assert on_disk == cache.total_bytes == 10 * 4 * KIB


def test_block_larger_than_cap_is_not_kept(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=2 * KIB)
    small, small_data = block(1, KIB)
    cache.put(small, small_data)
    cache.put(*block(2, 4 * KIB))
    assert cache.contains(small)
    assert cache.total_bytes == KIB


def test_bad_hash_is_refused(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=KIB)
    with pytest.raises(ValueError, match="not a block hash"):
        cache.put("../../etc/passwd", b"x")
    assert files_on_disk(tmp_path) == set()


def test_index_and_recency_survive_reopen(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    blocks = [block(i) for i in range(3)]
    for age, (name, data) in enumerate(blocks):
        cache.put(name, data)
        # Distinct, old mtimes: a, b, c from oldest to newest.
        os.utime(tmp_path / name[:2] / name, (1000 + age, 1000 + age))
    reopened = BlockCache(tmp_path, max_bytes=1024 * KIB)
    assert reopened.total_bytes == 3 * 4 * KIB
    assert reopened.get(blocks[0][0]) == blocks[0][1]  # a hit records itself on disk
    shrunk = BlockCache(tmp_path, max_bytes=2 * 4 * KIB)
    assert not shrunk.contains(blocks[1][0])  # b is now the oldest
    assert shrunk.contains(blocks[0][0]) and shrunk.contains(blocks[2][0])
    assert files_on_disk(tmp_path) == {blocks[0][0], blocks[2][0]}


def test_reopen_removes_temp_files_and_ignores_strangers(tmp_path: Path) -> None:
    name, data = block(1)
    folder = tmp_path / name[:2]
    folder.mkdir()
    (folder / f"{name}.abc.tmp").write_bytes(data[:10])
    (folder / "notes.txt").write_bytes(b"hello")
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    assert cache.total_bytes == 0
    assert not (folder / f"{name}.abc.tmp").exists()
    assert (folder / "notes.txt").exists()


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_file_is_discarded_and_refetched(tmp_path: Path, damage: str) -> None:
    name, data = block(7)
    BlockCache(tmp_path, max_bytes=1024 * KIB).put(name, data)
    path = tmp_path / name[:2] / name
    path.write_bytes(b"\0" + data[1:] if damage == "corrupt" else data[:100])
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)  # a new session checks it once
    assert cache.read(name, 0, 10) is None  # not verified yet: no range read
    assert cache.get(name) is None
    assert not path.exists()
    assert cache.total_bytes == 0
    fetches: list[str] = []

    async def fetch() -> bytes:
        fetches.append(name)
        return data

    assert trio.run(cache.get_or_fetch, name, fetch) == data
    assert fetches == [name]
    assert path.read_bytes() == data


def test_concurrent_misses_share_one_fetch(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    name, data = block(3)
    fetches = 0
    results: list[bytes] = []

    async def fetch() -> bytes:
        nonlocal fetches
        fetches += 1
        await trio.sleep(0.05)
        return data

    async def reader() -> None:
        results.append(await cache.get_or_fetch(name, fetch))

    async def main() -> None:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(reader)
            # Afterwards the block comes from disk.
            assert await cache.get_or_fetch(name, fetch) == data

    trio.run(main)
    assert fetches == 1
    assert results == [data] * 20


def test_fetch_error_reaches_every_waiter_and_is_not_cached(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    name, data = block(4)
    calls = 0
    errors: list[BaseException] = []

    async def failing_fetch() -> bytes:
        nonlocal calls
        calls += 1
        await trio.sleep(0.05)
        raise ConnectionError("server gone")

    async def reader() -> None:
        try:
            await cache.get_or_fetch(name, failing_fetch)
        except ConnectionError as exc:
            errors.append(exc)

    async def fine_fetch() -> bytes:
        return data

    async def main() -> bytes:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(reader)
            return await cache.get_or_fetch(name, fine_fetch)

    assert trio.run(main) == data
    assert calls == 1
    assert len(errors) == 5
    assert all("server gone" in str(exc) for exc in errors)


def test_waiter_takes_over_when_the_fetching_task_is_cancelled(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    name, data = block(5)
    calls = 0

    async def fetch() -> bytes:
        nonlocal calls
        calls += 1
        await trio.sleep(0.1)
        return data

    async def main() -> bytes:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                leader = trio.CancelScope()

                async def first() -> None:
                    with leader:
                        await cache.get_or_fetch(name, fetch)

                nursery.start_soon(first)
                await trio.sleep(0.02)  # the first task is now fetching
                waiter_result: list[bytes] = []

                async def second() -> None:
                    waiter_result.append(await cache.get_or_fetch(name, fetch))

                nursery.start_soon(second)
                await trio.sleep(0.02)
                leader.cancel()
            return waiter_result[0]

    assert trio.run(main) == data
    assert calls == 2


def test_failure_to_store_does_not_fail_the_read(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    name, data = block(6)
    (tmp_path / name[:2]).write_bytes(b"a file where the fan-out folder should be")

    async def fetch() -> bytes:
        return data

    assert trio.run(cache.get_or_fetch, name, fetch) == data
    assert not cache.contains(name)


def test_range_read_of_a_verified_block(tmp_path: Path) -> None:
    data = bytes(range(256)) * 16
    name = block_hash(data)
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    assert cache.read(name, 0, 4) is None
    cache.put(name, data)
    assert cache.verified(name)
    assert cache.read(name, 100, 50) == data[100:150]
    assert cache.read(name, len(data) - 10, 4096) == data[-10:]  # a read past the end is short


def test_block_found_at_start_is_verified_once_then_read_by_range(tmp_path: Path) -> None:
    name, data = block(3)
    BlockCache(tmp_path, max_bytes=1024 * KIB).put(name, data)
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    assert cache.contains(name) and not cache.verified(name)
    assert cache.get(name) == data
    assert cache.verified(name)
    # Damage after the one check is not looked for again by content, only by length.
    path = tmp_path / name[:2] / name
    path.write_bytes(b"\1" + data[1:])
    assert cache.read(name, 0, 2) == b"\1" + data[1:2]


def test_verified_block_found_short_is_discarded(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    name, data = block(5)
    cache.put(name, data)
    path = tmp_path / name[:2] / name
    path.write_bytes(data[:100])
    assert cache.read(name, 50, 200) is None
    assert not path.exists()
    assert not cache.contains(name) and not cache.verified(name)
    assert cache.total_bytes == 0


def test_block_copied_from_a_file_is_checked_when_first_read(tmp_path: Path) -> None:
    """Uploads copy blocks from the dirty file, which may have changed since it was hashed:
    such a copy is served only once its content matches its name."""
    (good, good_data), (bad, bad_data) = block(6, 300 * KIB), block(7, 300 * KIB)
    source = tmp_path / "dirty"
    source.write_bytes(b"x" * 10 + good_data + b"changed meanwhile" + bad_data[17:])
    cache = BlockCache(tmp_path / "blocks", max_bytes=1024 * KIB)
    fd = os.open(source, os.O_RDONLY)
    try:
        cache.copy_in(good, fd, 10, len(good_data))
        cache.copy_in(bad, fd, 10 + len(good_data), len(bad_data))
    finally:
        os.close(fd)
    assert cache.contains(good) and cache.contains(bad)
    assert cache.read(good, 0, 4) is None  # not checked yet: get (a worker thread) first
    assert cache.get(good) == good_data
    assert cache.read(good, 5, 4) == good_data[5:9]
    assert cache.get(bad) is None
    assert not cache.contains(bad)
    assert cache.total_bytes == len(good_data)


def test_an_adopted_file_becomes_the_block_and_is_checked_when_first_read(
    tmp_path: Path,
) -> None:
    """A committed one-block dirty copy is renamed in, not copied; one changed since it was
    hashed is caught at its first read, and one of another size is not taken at all."""
    cache = BlockCache(tmp_path / "blocks", max_bytes=1024 * KIB)
    (good, good_data), (bad, bad_data), (short, short_data) = (block(i, 3000) for i in (8, 9, 10))
    for name, data in (("good", good_data), ("bad", b"changed" + bad_data[7:])):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "short").write_bytes(short_data[:-1])
    assert cache.adopt(good, len(good_data), str(tmp_path / "good"))
    assert cache.adopt(bad, len(bad_data), str(tmp_path / "bad"))
    assert not cache.adopt(short, len(short_data), str(tmp_path / "short"))
    assert not cache.adopt(good, len(good_data), str(tmp_path / "short"))  # already cached
    assert not (tmp_path / "good").exists() and (tmp_path / "short").exists()
    assert cache.read(good, 0, 4) is None  # not checked yet
    assert cache.get(good) == good_data
    assert cache.get(bad) is None and not cache.contains(bad)
    assert cache.total_bytes == len(good_data)


def test_evicted_block_is_no_longer_verified(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=2 * 4 * KIB)
    (first, _), *rest = [block(i) for i in range(3)]
    cache.put(first, block(0)[1])
    for name, data in rest:
        cache.put(name, data)
    assert not cache.verified(first)
    assert cache.read(first, 0, 10) is None


def test_range_reads_keep_a_bounded_set_of_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blockcache, "MAX_OPEN_FILES", 2)
    cache = BlockCache(tmp_path, max_bytes=1024 * KIB)
    blocks = [block(i) for i in range(5)]
    for name, data in blocks:
        cache.put(name, data)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(2):
        for name, data in blocks:
            assert cache.read(name, 10, 20) == data[10:30]
    assert len(os.listdir("/proc/self/fd")) - before <= 2
    cache.discard(blocks[-1][0])  # its descriptor goes with it
    assert cache.read(blocks[-1][0], 0, 1) is None
    cache.close()
    assert len(os.listdir("/proc/self/fd")) <= before
    assert cache.read(blocks[0][0], 0, 4) == blocks[0][1][:4]  # reopened on demand
    cache.close()
