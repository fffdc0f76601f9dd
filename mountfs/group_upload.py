"""Sending the blocks of many small files together, for one batch of journal entries.

One file at a time (mountfs/upload.py) costs every file a /blocks/missing round trip and a
/blocks/batch request of its own; for a tree of small files those round trips are what
bounds the rate. Here the files of a batch are chunked in one worker thread, asked about in
one /blocks/missing and sent in shared /blocks/batch requests of up to ~16 MiB. Every block
is held in memory until it is sent, so the caller keeps the files few and small; a file that
vanished or shrank while it was read is left out, and the caller sends it on its own.
"""

import logging
import os
from collections.abc import Hashable
from typing import TypeVar

import trio

from backend.blocks import MAX_BATCH_BLOCKS
from backend.protocol.chunking import FileShrank
from cache.blockcache import BlockCache
from mountfs.remote import RemoteDrive
from mountfs.upload import BATCH_BYTES, Manifest, located, named_chunks

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
Named = tuple[str, bytes | memoryview]  # a block and its name, as sent


async def upload_files(
    remote: RemoteDrive,
    cache: BlockCache,
    sources: dict[K, tuple[str, int | None]],
    limiter: trio.CapacityLimiter,
) -> dict[K, Manifest]:
    """Make sure the server holds every block of the files at `sources` (a path and how
    many bytes of it, None for all); their manifests (a file that could not be read whole
    is missing from the answer). The blocks go into the block cache too, so the files still
    read locally once their dirty copies are dropped, except a whole file of one block: its
    commit renames the file itself into the cache (mountfs/replay.py), which spares a new
    file per small file."""
    chunked = await trio.to_thread.run_sync(_chunk_all, sources, limiter=limiter)
    blocks = {name: data for _manifest, named in chunked.values() for name, data in named}
    missing = await remote.missing_blocks(list(blocks)) if blocks else []
    batch: list[Named] = []
    batch_bytes = 0
    for name in missing:
        batch.append((name, blocks[name]))
        batch_bytes += len(blocks[name])
        if batch_bytes >= BATCH_BYTES or len(batch) == MAX_BATCH_BLOCKS:
            await remote.put_blocks(batch)
            batch, batch_bytes = [], 0
    if batch:
        await remote.put_blocks(batch)
    adopted = {
        named[0][0]
        for key, (_manifest, named) in chunked.items()
        if len(named) == 1 and sources[key][1] is None
    }
    kept = {name: data for name, data in blocks.items() if name not in adopted}
    await trio.to_thread.run_sync(_keep, cache, kept)
    return {key: manifest for key, (manifest, _named) in chunked.items()}


def _chunk_all(
    sources: dict[K, tuple[str, int | None]],
) -> dict[K, tuple[Manifest, list[Named]]]:
    chunked = {}
    for key, (path, limit) in sources.items():
        try:
            chunked[key] = _chunk(path, limit)
        except (FileNotFoundError, FileShrank) as exc:
            log.debug("%s left to its own upload: %s", path, exc or "gone")
    return chunked


def _chunk(path: str, limit: int | None) -> tuple[Manifest, list[Named]]:
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size if limit is None else limit
        named = list(named_chunks(file.fileno(), size))
    return Manifest(size, located(named)), [(name, data) for name, _offset, data in named]


def _keep(cache: BlockCache, blocks: dict[str, bytes]) -> None:
    for name, data in blocks.items():
        try:
            cache.put(name, data)
        except OSError as exc:  # the upload went through; a full disk costs a refetch
            log.debug("could not cache uploaded block %s: %s", name, exc)
            return
