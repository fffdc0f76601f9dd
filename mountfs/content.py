"""File content for the VFS: reads by block on demand, dirty copies for writes.

A clean file is read through its block list (cached in the mirror) one block at a time, and
only the blocks a read touches are fetched, through the shared block cache (singleflight). On
sequential reads the next blocks are fetched ahead in the background. A file being written
has a dirty copy (cache/dirty.py) that reads and writes go to; opening a file for writing does
not copy anything until the first write or a truncation that keeps data ("lazy
materialisation"), so `open(O_TRUNC)` of a large file costs nothing.
"""

import bisect
import logging
import os
from functools import partial

import trio

from cache.blockcache import BlockCache
from cache.dirty import DirtyFiles
from cache.metadb import MetaDB, Node
from mountfs.remote import RemoteDrive

log = logging.getLogger(__name__)

READ_AHEAD_BLOCKS = 2


class BlockIndex:
    """A revision's block list with a search by offset."""

    def __init__(self, blocks: list[tuple[int, int, str]]) -> None:
        self.blocks = blocks
        self._starts = [offset for offset, _size, _hash in blocks]

    def covering(self, offset: int, length: int) -> list[tuple[int, int, str]]:
        """The blocks that hold bytes [offset, offset + length)."""
        first = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        end = offset + length
        found = []
        for block in self.blocks[first:]:
            if block[0] >= end:
                break
            if block[0] + block[1] > offset:
                found.append(block)
        return found

    def after(self, offset: int, count: int) -> list[tuple[int, int, str]]:
        start = bisect.bisect_left(self._starts, offset)
        return self.blocks[start : start + count]


class Content:
    """Read and write file data; the VFS decides which node, this decides where bytes live."""

    def __init__(
        self,
        db: MetaDB,
        dirty: DirtyFiles,
        blocks: BlockCache,
        remote: RemoteDrive,
        nursery: trio.Nursery,
    ) -> None:
        self._db = db
        self.dirty = dirty
        self._blocks = blocks
        self._remote = remote
        self._nursery = nursery
        self._indexes: dict[tuple[int, int], BlockIndex] = {}
        self._locks: dict[int, trio.Lock] = {}

    async def read(self, node: Node, offset: int, size: int, sequential: bool) -> bytes:
        if node.dirty:
            return os.pread(self.dirty.fd(node.inode), size, offset)
        if node.rev == 0 or node.remote_id is None or offset >= node.size:
            return b""
        index = await self._index(node.remote_id, node.rev)
        size = min(size, node.size - offset)
        parts = []
        for block_offset, block_size, name in index.covering(offset, size):
            data = await self._block(name)
            start = max(offset - block_offset, 0)
            stop = min(offset + size - block_offset, block_size)
            parts.append(data[start:stop])
        if sequential:
            for _offset, _size, name in index.after(offset + size, READ_AHEAD_BLOCKS):
                self._nursery.start_soon(self._prefetch, name)
        return b"".join(parts)

    async def _index(self, remote_id: int, rev: int) -> BlockIndex:
        key = (remote_id, rev)
        index = self._indexes.get(key)
        if index is None:
            blocks = self._db.blocklist(remote_id, rev)
            if blocks is None:
                answer = await self._remote.block_list(remote_id, rev)
                blocks = [(b["offset"], b["size"], b["hash"]) for b in answer["blocks"]]
                self._db.put_blocklist(remote_id, rev, blocks)
            index = self._indexes[key] = BlockIndex(blocks)
        return index

    async def _block(self, name: str) -> bytes:
        data = await trio.to_thread.run_sync(self._blocks.get, name)
        if data is None:
            data = await self._blocks.get_or_fetch(name, partial(self._remote.get_block, name))
        return data

    async def _prefetch(self, name: str) -> None:
        """Warm the cache for a coming read; a failure only means the read fetches it later."""
        if self._blocks.contains(name):
            return
        try:
            await self._blocks.get_or_fetch(name, partial(self._remote.get_block, name))
        except Exception as exc:  # a background task must never take the mount down
            log.debug("read-ahead of %s failed: %s", name, exc)

    def lock(self, inode: int) -> trio.Lock:
        return self._locks.setdefault(inode, trio.Lock())

    async def materialise(self, node: Node, keep: bool) -> None:
        """Give a clean file its dirty copy, with its current content when `keep` is true."""
        if node.dirty:
            return
        if not keep or node.rev == 0 or node.remote_id is None:
            self.dirty.create_empty(node.inode)
            return
        index = await self._index(node.remote_id, node.rev)
        temp = self.dirty.temp_path(node.inode)
        with open(temp, "wb") as out:
            for _offset, _size, name in index.blocks:
                data = await self._block(name)
                await trio.to_thread.run_sync(out.write, data)
        self.dirty.install(node.inode, temp)

    def write(self, inode: int, offset: int, data: bytes) -> int:
        return os.pwrite(self.dirty.fd(inode), data, offset)

    def truncate(self, inode: int, size: int) -> None:
        os.truncate(self.dirty.path(inode), size)

    async def sync(self, inode: int) -> None:
        """fsync the dirty copy: after this, the data survives a crash of the machine."""
        path = self.dirty.path(inode)

        def _fsync() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        await trio.to_thread.run_sync(_fsync)

    def forget_revision(self, remote_id: int) -> None:
        """Drop in-memory block indexes of a node whose revision changed."""
        for key in [key for key in self._indexes if key[0] == remote_id]:
            del self._indexes[key]
