"""Content-defined chunking shared by the server (simple uploads) and the mount.

FastCDC cuts where the content says so, so an insert shifts only the chunks around it and the
rest of the file keeps its block names (delta sync). The average of 512 KiB balances the two
costs: smaller chunks send less around a change, larger ones mean fewer blocks, requests and
rows per GiB (2,048). A 1-byte edit resends about one chunk, ~0.25% of a 200 MiB file.
"""

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
# Files are chunked this much at a time (8 maximal chunks: the re-cut at each edge is cheap).
WINDOW_BYTES = 16 * 1024 * 1024
# A stream (StreamCutter) is cut once this much has gathered: at least one final chunk.
STREAM_WINDOW = 4 * MAX_CHUNK


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    data: bytes | memoryview


def iter_chunks(data: bytes | bytearray | memoryview) -> Iterator[Chunk]:
    """Yield the chunks of an in-memory buffer in order."""
    if len(data) == 0:
        return
    for found in fastcdc(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK, fat=True):
        yield Chunk(found.offset, found.data)


class FileShrank(Exception):
    """The file got shorter while it was being chunked (it is being changed)."""


def iter_file_chunks(file: BinaryIO) -> Iterator[Chunk]:
    """Yield the chunks of an open regular file, as it is when the iteration starts."""
    yield from chunk_file(file.fileno(), os.fstat(file.fileno()).st_size)


def chunk_file(fd: int, size: int, start: int = 0, final: bool = True) -> Iterator[Chunk]:
    """The content-defined chunks of bytes [start, size) of a file, read with pread a window
    at a time, so memory does not grow with the file: the same chunks as the whole content
    cut at once (a window's last chunk, which its end may have cut short, is cut again with
    the next window), provided `start` is a cut point of that content. With `final` false,
    `size` is not the end of the file but of what is known so far (a file still being
    written): the last chunk, which more data could lengthen, is left out too, so every
    chunk yielded is one the finished file will have if these bytes stay as they are.
    Never a memory map: a file that shrinks under a mapping kills the process (SIGBUS), and
    a mount's dirty copy can be truncated at any moment. FileShrank when it does. Each
    chunk's data is a view into its window (no copy)."""
    offset = start
    while offset < size:
        wanted = min(WINDOW_BYTES, size - offset)
        window = memoryview(os.pread(fd, wanted, offset))
        if len(window) < wanted:
            raise FileShrank(f"the file shrank below {offset + wanted} bytes")
        cuts = [
            (cut.offset, cut.length) for cut in fastcdc(window, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        ]
        if offset + wanted < size or not final:
            cuts.pop()  # ends where the window does, not where the content says
        if not cuts:
            return
        for begin, length in cuts:
            yield Chunk(offset + begin, window[begin : begin + length])
        offset += cuts[-1][0] + cuts[-1][1]


class StreamCutter:
    """Cuts bytes that arrive in pieces (the PUTs of a resumable upload) into the chunks the
    whole content cut at once would have. `carried` is what an earlier cutter left uncut, and
    `offset` where it starts in the content (a cut point). Every chunk handed out is final;
    the bytes after the last cut wait in `tail` until more arrive or the content ends.
    Memory stays under STREAM_WINDOW plus one piece."""

    def __init__(self, offset: int, carried: bytes = b"") -> None:
        self.offset = offset
        self._buffer = bytearray(carried)

    @property
    def tail(self) -> bytes:
        return bytes(self._buffer)

    def feed(self, piece: bytes) -> list[Chunk]:
        """Take the next piece; the chunks that became final, once enough has gathered."""
        self._buffer += piece
        return self.cut(final=False) if len(self._buffer) >= STREAM_WINDOW else []

    def cut(self, final: bool) -> list[Chunk]:
        """The chunks of what is gathered: all but the last, which more bytes could lengthen,
        or all of them when `final` (the content ends here)."""
        if not self._buffer:
            return []
        cuts = [
            (c.offset, c.length) for c in fastcdc(self._buffer, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        ]
        if not final:
            cuts.pop()
        chunks = [
            Chunk(self.offset + begin, bytes(self._buffer[begin : begin + length]))
            for begin, length in cuts
        ]
        consumed = sum(length for _begin, length in cuts)
        del self._buffer[:consumed]
        self.offset += consumed
        return chunks
