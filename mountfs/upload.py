"""Sending one dirty file to the server: chunk, ask what is missing, upload that, commit.

The stages run at once, as a pipeline, so the upload of a large file starts with its first
blocks rather than after the whole file is chunked:

    chunker thread ──groups of ~8 MiB──▶ sifter ──batches of ~8 MiB──▶ UPLOAD_CONCURRENCY
    (FastCDC + BLAKE3)                   (/blocks/missing per group)    senders (/blocks/batch)

Memory stays bounded whatever the file size: the channels between stages hold at most one
item each, so about (3 + UPLOAD_CONCURRENCY) groups of ~8 MiB are alive at a time, and the
chunker blocks when the uploads fall behind. Delta sync falls out of content-defined chunking:
after an edit, only the chunks around it have new names, so only they are missing.

A block is uploaded from the very bytes that were hashed to name it, so the server always
holds what the manifest names, even when the file changes while this runs (the caller then
sees a new generation and uploads again). `ContentChanged` is raised when the file shrinks
under the chunker, whose view of it would otherwise be torn.

Once the server holds a block, the block also goes to the clean block cache (the ones it had
already as soon as /blocks/missing says so, the others once sent): the dirty copy is dropped
after the upload, and without this a file just written would be fetched back block by block.
One upload keeps at most CACHE_SHARE of the cache's size, so a huge file does not evict
everything else; its first blocks are the ones kept.
"""

import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial

import trio

from backend.blocks import MAX_BATCH_BLOCKS
from backend.protocol.chunking import Chunk, iter_chunks
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
WINDOW_BYTES = 16 * 1024 * 1024

log = logging.getLogger(__name__)

Block = tuple[str, bytes]


class ContentChanged(Exception):
    """The dirty file changed during the upload; try again."""


class _Keeper:
    """Puts uploaded blocks into the clean cache, up to this upload's share of it."""

    def __init__(self, cache: BlockCache) -> None:
        self._cache = cache
        self._left = int(cache.max_bytes * CACHE_SHARE)

    async def keep(self, blocks: list[Block]) -> None:
        chosen: list[Block] = []
        for block in blocks:
            if len(block[1]) > self._left:
                self._left = 0  # keep a prefix of the file: its reader starts there
                break
            self._left -= len(block[1])
            chosen.append(block)
        if chosen:
            await trio.to_thread.run_sync(self._put_all, chosen)

    def _put_all(self, blocks: list[Block]) -> None:
        for name, data in blocks:
            try:
                self._cache.put(name, data)
            except OSError as exc:  # the upload went through; a full disk costs a refetch
                log.debug("could not cache uploaded block %s: %s", name, exc)
                return


@dataclass(frozen=True, slots=True)
class Manifest:
    size: int
    blocks: list[tuple[int, int, str]]  # (offset, size, hash)


def chunk_file(fd: int, size: int) -> Iterator[Chunk]:
    """The content-defined chunks of the first `size` bytes of a file, read with pread a
    window at a time: the same chunks as the whole content cut at once (a window's last
    chunk, which its end may have cut short, is cut again with the next window). The file
    is never memory-mapped: one that shrinks under a mapping kills the process (SIGBUS),
    and the dirty copy can be truncated at any moment. ContentChanged if it shrinks."""
    offset = 0
    while offset < size:
        wanted = min(WINDOW_BYTES, size - offset)
        window = os.pread(fd, wanted, offset)
        if len(window) < wanted:
            raise ContentChanged(f"the file shrank below {offset + wanted} bytes")
        chunks = list(iter_chunks(window))
        if offset + wanted < size:
            chunks.pop()  # ends where the window does, not where the content says
        for chunk in chunks:
            yield Chunk(offset + chunk.offset, chunk.data)
        offset += chunks[-1].offset + len(chunks[-1].data)


def _chunk(path: str, emit: "trio.MemorySendChannel[list[Block]]") -> Manifest:
    """Cut the file into named blocks (in a worker thread), handing them on in groups."""
    blocks: list[tuple[int, int, str]] = []
    group: list[Block] = []
    group_bytes = 0
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        for chunk in chunk_file(file.fileno(), size):
            name = block_hash(chunk.data)
            blocks.append((chunk.offset, len(chunk.data), name))
            group.append((name, chunk.data))
            group_bytes += len(chunk.data)
            if group_bytes >= BATCH_BYTES or len(group) == MAX_BATCH_BLOCKS:
                trio.from_thread.run(emit.send, group)
                group, group_bytes = [], 0
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
    batch_in, batch_out = trio.open_memory_channel[list[Block]](1)
    keeper = _Keeper(blocks)
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

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stage, chunker)
        nursery.start_soon(stage, partial(_sift, remote, keeper, found_out, batch_in))
        async with batch_out:
            for _ in range(UPLOAD_CONCURRENCY):
                send = partial(_send, remote, keeper, batch_out.clone())
                nursery.start_soon(stage, send)
    if failures:
        raise failures[0]
    return manifest[0]


async def _sift(
    remote: RemoteDrive,
    keeper: _Keeper,
    found: "trio.MemoryReceiveChannel[list[Block]]",
    batches: "trio.MemorySendChannel[list[Block]]",
) -> None:
    """Keep the blocks the server lacks (each name once) and pack them into batches; cache
    the ones it has."""
    seen: set[str] = set()
    batch: list[Block] = []
    batch_bytes = 0
    async with found, batches:
        async for group in found:
            fresh = {name: data for name, data in group if name not in seen}
            seen.update(fresh)
            missing = await remote.missing_blocks(list(fresh)) if fresh else []
            lacking = set(missing)
            await keeper.keep([block for block in fresh.items() if block[0] not in lacking])
            for name in missing:
                batch.append((name, fresh[name]))
                batch_bytes += len(fresh[name])
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
            await remote.put_blocks(batch)
            await keeper.keep(batch)
