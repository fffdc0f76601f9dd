"""The read path's fast cases: range reads that never wait for the disk on the event loop,
and block fetches over the blocking keep-alive connections of the remote client."""

import os
from pathlib import Path

import trio

from backend.protocol.hashing import block_hash
from cache.blockcache import BlockCache
from mountfs.remote import RemoteDrive

KIB = 1024


def _evict_pages(path: Path) -> None:
    """Write the file back and drop its pages, so the next read must go to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_a_range_read_off_the_page_cache_is_refused_without_waiting(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, max_bytes=4096 * KIB)
    data = os.urandom(512 * KIB)
    name = block_hash(data)
    cache.put(name, data)
    assert cache.read(name, 4 * KIB, 4 * KIB, wait=False) == data[4 * KIB : 8 * KIB]
    _evict_pages(tmp_path / name[:2] / name)
    try:
        piece = cache.read(name, 300 * KIB, 4 * KIB, wait=False)
    except BlockingIOError:  # the usual case: the page is gone and the read would wait
        piece = cache.read(name, 300 * KIB, 4 * KIB)
    assert piece == data[300 * KIB : 304 * KIB]


def test_a_range_read_of_an_unverified_block_is_a_miss(tmp_path: Path) -> None:
    data = os.urandom(64 * KIB)
    name = block_hash(data)
    BlockCache(tmp_path, max_bytes=4096 * KIB).put(name, data)
    reopened = BlockCache(tmp_path, max_bytes=4096 * KIB)  # a new session checks it again
    assert reopened.read(name, 0, KIB, wait=False) is None
    assert reopened.get(name) == data
    assert reopened.read(name, 0, KIB, wait=False) == data[:KIB]


def test_block_requests_reuse_connections_the_server_closed_meanwhile(shared_server) -> None:
    """Block fetches and uploads keep connections alive between requests; one the server
    has since closed is replaced without the caller seeing an error."""
    token = shared_server.create_user("reader")
    blocks = [os.urandom(100 * KIB + i) for i in range(10)]
    names = [block_hash(data) for data in blocks]
    expected = dict(zip(names, blocks, strict=True))

    async def main() -> None:
        async with RemoteDrive(shared_server.url, token) as remote:
            await remote.put_blocks(list(zip(names, blocks, strict=True)))
            assert await remote.get_blocks(names) == expected
            for connection in remote._blocks._idle:  # what a server's idle timeout does
                connection.sock.shutdown(2)
            assert await remote.get_blocks(names[:3]) == {
                name: expected[name] for name in names[:3]
            }
            more = [os.urandom(200 * KIB) for _ in range(8)]  # larger than a socket buffer
            for connection in remote._blocks._idle:
                connection.sock.shutdown(2)
            await remote.put_blocks([(block_hash(data), data) for data in more])
            assert await remote.missing_blocks([block_hash(data) for data in more]) == []

    trio.run(main)
