"""Block transfer for the mount: which blocks the server lacks, and block PUT/GET by hash."""

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from backend.api.deps import PrincipalDep, Services, ServicesDep, declared_length
from backend.api.models import MissingIn
from backend.metadata.types import Principal
from backend.protocol.chunking import MAX_BLOCK_SIZE
from backend.protocol.errors import NotFound, PayloadTooLarge

router = APIRouter(prefix="/v1/blocks", tags=["blocks"])

# A zstd frame of incompressible data is a little larger than the data; this leaves room.
MAX_WIRE_SIZE = MAX_BLOCK_SIZE + 64 * 1024
HashPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="BLAKE3 hex digest")]
# Clients send `Content-Type: application/zstd`; the schema says octet-stream so generic
# OpenAPI tools can produce a body (the server reads the bytes whatever the type says).
_ZSTD_BODY = {
    "requestBody": {
        "description": "one zstd frame holding the block",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


@router.post("/missing")
def missing(who: PrincipalDep, services: ServicesDep, body: MissingIn) -> dict:
    return {"missing": services.metadata.missing_blocks(who, body.hashes)}


@router.put("/{hash}", status_code=201, openapi_extra=_ZSTD_BODY)
async def put_block(
    hash: HashPath,
    request: Request,
    who: PrincipalDep,
    services: ServicesDep,
) -> dict:
    """Store one zstd-framed block; the body is refused (413) before it grows past the cap."""
    if declared_length(request) > MAX_WIRE_SIZE:
        raise PayloadTooLarge(f"a block frame may be at most {MAX_WIRE_SIZE} bytes")
    wire = bytearray()
    async for piece in request.stream():
        wire += piece
        if len(wire) > MAX_WIRE_SIZE:
            raise PayloadTooLarge(f"a block frame may be at most {MAX_WIRE_SIZE} bytes")
    size = await run_in_threadpool(_store, services, who, hash, bytes(wire))
    return {"hash": hash, "size": size}


def _store(services: Services, who: Principal, hash: str, wire: bytes) -> int:
    stored = services.blocks.put_wire(hash, wire)
    services.metadata.record_block(who, hash, stored.size, stored.stored_size)
    return stored.size


@router.get(
    "/{hash}",
    response_class=Response,
    responses={200: {"content": {"application/zstd": {}}}},
)
def get_block(hash: HashPath, who: PrincipalDep, services: ServicesDep) -> Response:
    if not services.metadata.may_read_block(who, hash):
        raise NotFound(f"no such block: {hash}")
    return Response(services.blocks.get_wire(hash), media_type="application/zstd")
