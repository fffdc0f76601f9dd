"""Sending one dirty file to the server: chunk, ask what is missing, upload that, commit.

The stages run at once, as a pipeline, so the upload of a large file starts with its first
blocks rather than after the whole file is chunked:

    chunker thread ──groups──▶ checker ──────────▶ packer ──batches──▶ UPLOAD_CONCURRENCY senders
    (FastCDC + BLAKE3)         (/blocks/missing)     │     (~8 MiB)      (/blocks/batch)
                                                    keeper (clean cache) ◀──┘

Memory stays bounded whatever the file size: the channels between stages hold at most one
item each, so about (4 + UPLOAD_CONCURRENCY) groups of ~8 MiB are alive at a time (with
the windows they are views of), and the chunker blocks when the uploads fall behind. The
checker asks about the next group while the blocks of the previous one are packed and sent.
Delta sync falls out of content-defined chunking: after an edit, only the chunks around it
have new names, so only they are missing.

A block is uploaded from the very bytes that were hashed to name it, so the server always
holds what the manifest names, even when the file changes while this runs (the caller then
sees a new generation and uploads again). `ContentChanged` is raised when the file shrinks
under the chunker, whose view of it would otherwise be torn.

Once the server holds a block, the block also goes to the clean block cache (the ones it had
already as soon as /blocks/missing says so, the others once sent): the dirty copy is dropped
after the upload, and without this a file just written would be fetched back block by block.
The cache is filled by its own task, copying each block's range of the file in the kernel
(`copy_file_range`), so no sender waits for it and no block is held in memory for it; as the
file may change meanwhile, those copies are checked against their names when first read.
One upload keeps at most CACHE_SHARE of the cache's size, so a huge file does not evict
everything else; its first blocks are the ones kept.

Chunking reads the file a window at a time and hands on views of the window, not copies:
each byte is copied from the page cache once, into the window, until it is framed.
"""

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from backend.blocks import MAX_BATCH_BLOCKS
from backend.protocol.chunking import FileShrank, chunk_file
from backend.protocol.hashing import block_hash
from cache.blockcache import BlockCache
from mountfs.remote import RemoteDrive

UPLOAD_CONCURRENCY = 4
# Bytes of blocks per missing check and per upload request: big enough that the server's
# per-request costs (one flush, one transaction) vanish, small enough to keep memory low.
BATCH_BYTES = 8 * 1024 * 1024
# Share of the block cache's size that one upload may fill with the blocks it sent.
CACHE_SHARE = 0.5
# Bytes read (and chunked) at a time; far more than MAX_CHUNK, so each window ends with
# several chunks whose cut points do not depend on where the window ends.

log = logging.getLogger(__name__)

Block = tuple[str, int, memoryview]  # (hash, offset in the file, data)


class ContentChanged(Exception):
    """The dirty file changed during the upload; try again."""


class _Keeper:
    """Copies the blocks the server holds from the file into the clean cache, up to this
    upload's share of it, in a task of its own: ranges queue up (they cost no memory) and
    are copied in the kernel while the uploads go on."""

    def __init__(self, cache: BlockCache, path: str) -> None:
        self._cache = cache
        self._path = path
        self._left = int(cache.max_bytes * CACHE_SHARE)
        self._send, self._receive = trio.open_memory_channel[list[tuple[str, int, int]]](
            float("inf")
        )

    def keep(self, blocks: list[Block]) -> None:
        chosen: list[tuple[str, int, int]] = []
        for name, offset, data in blocks:
            if len(data) > self._left:
                self._left = 0  # keep a prefix of the file: its reader starts there
                break
            self._left -= len(data)
            chosen.append((name, offset, len(data)))
        if chosen:
            self._send.send_nowait(chosen)

    def close(self) -> None:
        self._send.close()

    async def run(self) -> None:
        async with self._receive:
            async for ranges in self._receive:
                await trio.to_thread.run_sync(self._copy_all, ranges)

    def _copy_all(self, ranges: list[tuple[str, int, int]]) -> None:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:  # gone already: the file's readers fetch the blocks
            log.debug("could not cache blocks of %s: %s", self._path, exc)
            return
        try:
            for name, offset, size in ranges:
                self._cache.copy_in(name, fd, offset, size)
        except OSError as exc:  # the upload went through; a full disk costs a refetch
            log.debug("could not cache uploaded blocks of %s: %s", self._path, exc)
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Manifest:
    size: int
    blocks: list[tuple[int, int, str]]  # (offset, size, hash)


def _chunk(path: str, emit: "trio.MemorySendChannel[list[Block]]") -> Manifest:
    """Cut the file into named blocks (in a worker thread), handing them on in groups."""
    blocks: list[tuple[int, int, str]] = []
    group: list[Block] = []
    group_bytes = 0
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        try:
            for chunk in chunk_file(file.fileno(), size):
                name = block_hash(chunk.data)
                blocks.append((chunk.offset, len(chunk.data), name))
                group.append((name, chunk.offset, chunk.data))
                group_bytes += len(chunk.data)
                if group_bytes >= BATCH_BYTES or len(group) == MAX_BATCH_BLOCKS:
                    trio.from_thread.run(emit.send, group)
                    group, group_bytes = [], 0
        except FileShrank as exc:
            raise ContentChanged(str(exc)) from None
        if os.fstat(file.fileno()).st_size < size:
            raise ContentChanged(f"{path} shrank during the upload")
    if group:
        trio.from_thread.run(emit.send, group)
    return Manifest(size, blocks)


async def upload_blocks(
    remote: RemoteDrive, blocks: BlockCache, path: str, limiter: trio.CapacityLimiter
) -> Manifest:
    """Chunk the file at `path` and make sure the server has every block; return the list.

    The first failure of any stage stops the others and is raised as it is (not wrapped in
    an exception group), so callers can tell ContentChanged or ServerUnreachable apart.
    """
    found_in, found_out = trio.open_memory_channel[list[Block]](1)
    checked_in, checked_out = trio.open_memory_channel[tuple[list[Block], set[str]]](1)
    batch_in, batch_out = trio.open_memory_channel[list[Block]](1)
    keeper = _Keeper(blocks, path)
    manifest: list[Manifest] = []
    failures: list[Exception] = []

    async def stage(work: Callable[[], Awaitable[object]]) -> None:
        try:
            await work()
        except Exception as exc:
            failures.append(exc)
            nursery.cancel_scope.cancel()

    async def chunker() -> None:
        async with found_in:
            manifest.append(await trio.to_thread.run_sync(_chunk, path, found_in, limiter=limiter))

    senders_left = UPLOAD_CONCURRENCY

    async def sender(batches: "trio.MemoryReceiveChannel[list[Block]]") -> None:
        nonlocal senders_left
        await _send(remote, keeper, batches)
        senders_left -= 1
        if not senders_left:
            keeper.close()  # every block the server holds is queued for the cache

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stage, keeper.run)
        nursery.start_soon(stage, chunker)
        nursery.start_soon(stage, partial(_check, remote, found_out, checked_in))
        nursery.start_soon(stage, partial(_pack, keeper, checked_out, batch_in))
        async with batch_out:
            for _ in range(UPLOAD_CONCURRENCY):
                nursery.start_soon(stage, partial(sender, batch_out.clone()))
    if failures:
        raise failures[0]
    return manifest[0]


async def _check(
    remote: RemoteDrive,
    found: "trio.MemoryReceiveChannel[list[Block]]",
    checked: "trio.MemorySendChannel[tuple[list[Block], set[str]]]",
) -> None:
    """Ask the server which blocks of each group it lacks (each name once per upload)."""
    seen: set[str] = set()
    async with found, checked:
        async for group in found:
            fresh = {block[0]: block for block in group if block[0] not in seen}
            seen.update(fresh)
            missing = await remote.missing_blocks(list(fresh)) if fresh else []
            await checked.send((list(fresh.values()), set(missing)))


async def _pack(
    keeper: _Keeper,
    checked: "trio.MemoryReceiveChannel[tuple[list[Block], set[str]]]",
    batches: "trio.MemorySendChannel[list[Block]]",
) -> None:
    """Pack the blocks the server lacks into batches; cache the ones it has."""
    batch: list[Block] = []
    batch_bytes = 0
    async with checked, batches:
        async for group, missing in checked:
            keeper.keep([block for block in group if block[0] not in missing])
            for block in group:
                if block[0] not in missing:
                    continue
                batch.append(block)
                batch_bytes += len(block[2])
                if batch_bytes >= BATCH_BYTES or len(batch) == MAX_BATCH_BLOCKS:
                    await batches.send(batch)
                    batch, batch_bytes = [], 0
        if batch:
            await batches.send(batch)


async def _send(
    remote: RemoteDrive,
    keeper: _Keeper,
    batches: "trio.MemoryReceiveChannel[list[Block]]",
) -> None:
    """Upload batches until there are none left, caching each once the server holds it."""
    async with batches:
        async for batch in batches:
            await remote.put_blocks([(name, data) for name, _offset, data in batch])
            keeper.keep(batch)
