"""Streaming a file revision's bytes, block by block, with ETag and single byte ranges.

Memory stays at one block however large the file is: the response iterates the revision's
block list and fetches (and verifies) each block only when the client is ready for it. A
block that fails verification (or cannot be read) after the answer has started cuts the
body short rather than sending wrong bytes: the connection is closed before the declared
Content-Length, which the client notices, and the server logs one line.
"""

import contextlib
import logging
import re
from collections.abc import Iterator

from fastapi import Response
from fastapi.responses import StreamingResponse
from starlette.types import Send

from backend.api.errors import error_response
from backend.blocks import BlockService
from backend.metadata.types import BlockList, BlockRef
from backend.protocol.errors import BlockSizeMismatch, CirrusError, RangeNotSatisfiable

log = logging.getLogger(__name__)

_BYTE_RANGE = re.compile(r"bytes=(\d{0,20})-(\d{0,20})")


class _CutShort(Exception):
    """A block could not be sent verified once the answer had started."""


class _FileStream(StreamingResponse):
    async def stream_response(self, send: Send) -> None:
        """The body; left unfinished when it is cut short (the server then closes the
        connection, so the client sees fewer bytes than Content-Length)."""
        with contextlib.suppress(_CutShort):
            await super().stream_response(send)


def etag_of(blocks: BlockList) -> str:
    return f'"{blocks.id}.{blocks.rev}"'


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) a Range header asks for, or None for the whole file.

    Only one range is served: a multi-range request, or one in another unit, gets the whole
    file (both allowed by RFC 9110). A malformed or unsatisfiable byte range is 416.
    """
    if header is None or not header.strip().lower().startswith("bytes=") or "," in header:
        return None
    match = _BYTE_RANGE.fullmatch(header.strip().lower().replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        raise RangeNotSatisfiable(f"malformed Range header: {header[:100]!r}")
    first_text, last_text = match.groups()
    if first_text == "":  # the last N bytes
        first, last = max(0, size - int(last_text)), size - 1
        if int(last_text) == 0:
            raise RangeNotSatisfiable("a suffix range of 0 bytes selects nothing")
    else:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
        if last_text and int(last_text) < first:
            raise RangeNotSatisfiable(f"range {header!r} ends before it starts")
    if first >= size:
        raise RangeNotSatisfiable(f"range {header!r} starts beyond the end ({size} bytes)")
    return first, last


def matches_etag(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def _stream(service: BlockService, blocks: BlockList, first: int, last: int) -> Iterator[bytes]:
    """The bytes first..last, block by block. Before the answer starts, the archived
    blocks are prepared (their restores asked for together) and the first block is read,
    so a block that cannot be read now (being restored from the archive: 503 with
    Retry-After) is a proper error answer rather than a cut-off body."""
    wanted = [b for b in blocks.blocks if b.offset + b.size - 1 >= first and b.offset <= last]
    service.prepare_reads(sorted({b.hash for b in wanted} & blocks.archived))
    head = _read(service, wanted[0]) if wanted else b""

    def pieces() -> Iterator[bytes]:
        for index, block in enumerate(wanted):
            try:
                data = head if index == 0 else _read(service, block)
            except CirrusError as exc:
                log.error("download of file %d cut short at byte %d: %s",
                          blocks.id, max(first, block.offset), exc.message)  # fmt: skip
                raise _CutShort from None
            yield data[max(0, first - block.offset) : last - block.offset + 1]

    return pieces()


def _read(service: BlockService, block: BlockRef) -> bytes:
    data = service.get_plain(block.hash)
    if len(data) != block.size:  # never a short body under a promised Content-Length
        raise BlockSizeMismatch(f"block {block.hash} holds {len(data)} bytes, not {block.size}")
    return data


def file_response(
    service: BlockService, blocks: BlockList, range_header: str | None, if_none_match: str | None
) -> Response:
    etag = etag_of(blocks)
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    if matches_etag(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    try:
        wanted = byte_range(range_header, blocks.size)
    except RangeNotSatisfiable as exc:
        unsatisfied = {"Content-Range": f"bytes */{blocks.size}"}
        return error_response(exc.status, exc.code, exc.message, unsatisfied)
    status = 200
    first, last = 0, blocks.size - 1
    if wanted is not None:
        status, (first, last) = 206, wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{blocks.size}"
    headers["Content-Length"] = str(last - first + 1)
    return _FileStream(
        _stream(service, blocks, first, last),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )
