"""Sending one dirty file to the server: chunk, ask what is missing, upload that, commit.

Memory stays bounded whatever the file size: chunking runs in a worker thread over a memory
map and keeps only (offset, size, hash) triples; each missing block is read back from the
file just before it is sent, at most UPLOAD_CONCURRENCY at a time. Delta sync falls out of
content-defined chunking: after an edit, only the chunks around it have new names, so only
they are missing on the server.

The file may change while this runs (it is still open for writing elsewhere). A block re-read
for upload is hashed again; if it no longer matches, the attempt is abandoned with
`ContentChanged` and retried, so a commit never names blocks that were not sent.
"""

import os
from dataclasses import dataclass

import trio

from backend.protocol.chunking import iter_file_chunks
from backend.protocol.hashing import block_hash
from cache.blockcache import BlockCache
from mountfs.remote import RemoteDrive

UPLOAD_CONCURRENCY = 4
# Blocks of files up to this size also go to the clean block cache (cheap re-reads).
CACHE_UPLOADED_UP_TO = 64 * 1024 * 1024


class ContentChanged(Exception):
    """The dirty file changed during the upload; try again."""


@dataclass(frozen=True, slots=True)
class Manifest:
    size: int
    blocks: list[tuple[int, int, str]]  # (offset, size, hash)


def _chunk(path: str) -> Manifest:
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        blocks = [
            (chunk.offset, len(chunk.data), block_hash(chunk.data))
            for chunk in iter_file_chunks(file)
        ]
    return Manifest(size, blocks)


def _read_block(path: str, offset: int, size: int, name: str) -> bytes:
    with open(path, "rb") as file:
        data = os.pread(file.fileno(), size, offset)
    if len(data) != size or block_hash(data) != name:
        raise ContentChanged(f"{path} changed during the upload")
    return data


async def upload_blocks(
    remote: RemoteDrive, blocks: BlockCache, path: str, limiter: trio.CapacityLimiter
) -> Manifest:
    """Chunk the file at `path` and make sure the server has every block; return the list."""
    manifest = await trio.to_thread.run_sync(_chunk, path, limiter=limiter)
    unique = {name: (offset, size) for offset, size, name in manifest.blocks}
    missing = await remote.missing_blocks(list(unique))
    keep = manifest.size <= CACHE_UPLOADED_UP_TO
    slots = trio.Semaphore(UPLOAD_CONCURRENCY)

    failures: list[Exception] = []

    async def send(name: str) -> None:
        try:
            async with slots:
                offset, size = unique[name]
                data = await trio.to_thread.run_sync(_read_block, path, offset, size, name)
                await remote.put_block(name, data)
                if keep:
                    await trio.to_thread.run_sync(blocks.put, name, data)
        except Exception as exc:  # the first failure stops the others and is raised as is
            failures.append(exc)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for name in missing:
            nursery.start_soon(send, name)
    if failures:
        raise failures[0]
    return manifest
