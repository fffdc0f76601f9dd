"""Block transfer for the mount: which blocks the server lacks, and blocks by hash.

Blocks travel one per request (PUT/GET /v1/blocks/HASH) or up to 64 per request (POST
/v1/blocks/batch and /v1/blocks/fetch, framed as in backend/blocks.py). The single-block
calls are the one-block case of the batch code, so both verify, store and check access the
same way. CPU work (decompressing, hashing, encrypting) runs in worker threads, never on the
event loop.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from backend.api.bodies import body_limit
from backend.api.deps import PrincipalDep, Services, ServicesDep, declared_length
from backend.api.models import BlockHash, MissingIn
from backend.blocks import (
    BATCH_TYPE,
    MAX_BATCH_BLOCKS,
    MAX_BATCH_BYTES,
    MAX_WIRE_SIZE,
    StoredBlock,
    pack_batch,
    unpack_batch,
)
from backend.metadata.types import Principal
from backend.protocol.errors import InvalidRequest, NotFound, PayloadTooLarge

router = APIRouter(prefix="/v1/blocks", tags=["blocks"])

HashPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="BLAKE3 hex digest")]


def _binary_body(description: str) -> dict:
    """Clients send `application/zstd` or BATCH_TYPE; the schema says octet-stream so generic
    OpenAPI tools can produce a body (the server reads the bytes whatever the type says)."""
    content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {"requestBody": {"description": description, "content": content}}


_ZSTD_BODY = body_limit(MAX_WIRE_SIZE, **_binary_body("one zstd frame holding the block"))
_BATCH_BODY = body_limit(
    MAX_BATCH_BYTES,
    **_binary_body(
        f"blocks framed as [64 hex digits][8-byte big-endian length][zstd frame] ({BATCH_TYPE})"
    ),
)


class FetchIn(BaseModel):
    hashes: list[BlockHash]


@router.post("/missing")
def missing(who: PrincipalDep, services: ServicesDep, body: MissingIn) -> dict:
    return {"missing": services.metadata.missing_blocks(who, body.hashes)}


@router.put("/{hash}", status_code=201, openapi_extra=_ZSTD_BODY)
async def put_block(
    hash: HashPath, request: Request, who: PrincipalDep, services: ServicesDep
) -> dict:
    """Store one zstd-framed block; the body is refused (413) before it grows past the cap."""
    wire = await _read_body(request, MAX_WIRE_SIZE, "a block frame")
    stored = await run_in_threadpool(_store, services, who, [(hash, wire)])
    return stored[0]


@router.post("/batch", status_code=201, openapi_extra=_BATCH_BODY)
async def put_blocks(request: Request, who: PrincipalDep, services: ServicesDep) -> dict:
    """Store up to 64 framed blocks; one bad block refuses the batch and stores nothing."""
    body = await _read_body(request, MAX_BATCH_BYTES, "a batch")
    return {"blocks": await run_in_threadpool(_unpack_and_store, services, who, body)}


def _unpack_and_store(services: Services, who: Principal, body: bytes) -> list[dict]:
    blocks = unpack_batch(body)
    if not blocks:
        raise InvalidRequest("a batch holds at least one block")
    return _store(services, who, blocks)


def _store(services: Services, who: Principal, blocks: list[tuple[str, bytes]]) -> list[dict]:
    """Verify and store every block, then record them all in one metadata transaction
    (writing again any that a garbage collection deleted meanwhile)."""
    services.metadata.check_upload_quota(who, [(hash, len(wire)) for hash, wire in blocks])
    frames = dict(blocks)

    def write(hashes: list[str]) -> list[StoredBlock]:
        return services.blocks.put_wire_many([(h, frames[h]) for h in hashes])

    names = [block_hash for block_hash, _frame in blocks]
    stored = services.collector.store(services.metadata, who, names, write)
    return [{"hash": block.hash, "size": block.size} for block in stored]


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed limit."""
    if declared_length(request) > limit:
        raise PayloadTooLarge(f"{what} may be at most {limit} bytes")
    pieces: list[bytes] = []
    received = 0
    async for piece in request.stream():
        pieces.append(piece)
        received += len(piece)
        if received > limit:
            raise PayloadTooLarge(f"{what} may be at most {limit} bytes")
    # One copy at the end: growing a bytearray piece by piece copies it again and again
    # (it over-allocates by only ~1/8), ~40 reallocations for an 8 MiB body.
    return b"".join(pieces)


@router.get(
    "/{hash}",
    response_class=Response,
    responses={200: {"content": {"application/zstd": {}}}},
)
def get_block(hash: HashPath, who: PrincipalDep, services: ServicesDep) -> Response:
    return Response(_fetch(services, who, [hash])[0], media_type="application/zstd")


@router.post("/fetch", response_class=Response, responses={200: {"content": {BATCH_TYPE: {}}}})
def get_blocks(body: FetchIn, who: PrincipalDep, services: ServicesDep) -> Response:
    """Up to 64 blocks in one answer, framed like a batch upload, in the order asked."""
    if not body.hashes:
        raise InvalidRequest("ask for at least one block")
    if len(body.hashes) > MAX_BATCH_BLOCKS:
        raise PayloadTooLarge(f"ask for at most {MAX_BATCH_BLOCKS} blocks at once")
    frames = _fetch(services, who, body.hashes)
    return Response(pack_batch(list(zip(body.hashes, frames, strict=True))), media_type=BATCH_TYPE)


def _fetch(services: Services, who: Principal, hashes: list[str]) -> list[bytes]:
    """The frames of blocks this user may read; 404 naming the first one it may not."""
    readable = services.metadata.readable_blocks(who, hashes)
    for hash in hashes:
        if hash not in readable:
            raise NotFound(f"no such block: {hash}")
    return services.blocks.get_wire_many(hashes)
