"""Content-defined chunking shared by the server (simple uploads) and the mount.

FastCDC cuts where the content says so, so an insert shifts only the chunks around it and the
rest of the file keeps its block names (delta sync). The average of 512 KiB balances the two
costs: smaller chunks send less around a change, larger ones mean fewer blocks, requests and
rows per GiB (2,048). A 1-byte edit resends about one chunk, ~0.25% of a 200 MiB file.
"""

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fastcdc import fastcdc

MIN_CHUNK = 128 * 1024
AVG_CHUNK = 512 * 1024
MAX_CHUNK = 2 * 1024 * 1024
# The server refuses blocks larger than this (a little above MAX_CHUNK for headroom).
MAX_BLOCK_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    data: bytes


def iter_chunks(data: bytes | bytearray | memoryview) -> Iterator[Chunk]:
    """Yield the chunks of an in-memory buffer (or a memory map) in order."""
    if len(data) == 0:
        return
    for found in fastcdc(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK, fat=True):
        yield Chunk(found.offset, found.data)


def iter_file_chunks(file: BinaryIO) -> Iterator[Chunk]:
    """Yield the chunks of an open regular file through a read-only memory map.

    The map lets the page cache hold the data, so memory does not grow with the file size.
    The caller must keep the file from shrinking while it iterates.
    """
    if os.fstat(file.fileno()).st_size == 0:
        return
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            yield from iter_chunks(view)
        finally:
            view.release()
