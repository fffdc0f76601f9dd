"""Whole files: the seed's upload, download and history calls, plus commit and restore."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from backend.api.bodies import body_limit, large_json_post, release
from backend.api.deps import PrincipalDep, ServicesDep, check_path, declared_length
from backend.api.download import file_response
from backend.api.models import RAW_BODY, CommitIn, Mode, RestoreIn, Revision, TimeNs
from backend.api.sliced_json import SlicedJSONResponse
from backend.metadata.types import BlockList, BlockRef, CommitRequest, CommitResult, iso_from_ns
from backend.protocol.errors import InvalidRequest, PayloadTooLarge
from backend.uploads import MAX_FILE_SIZE

router = APIRouter(prefix="/v1/files", tags=["files"])

NodeId = Annotated[int, Query(ge=1, le=2**63 - 1)]


@router.post("", status_code=201, openapi_extra=body_limit(MAX_FILE_SIZE, **RAW_BODY))
async def upload(
    request: Request,
    who: PrincipalDep,
    services: ServicesDep,
    path: str,
    upload_type: Annotated[Literal["media", "resumable"], Query(alias="uploadType")],
    mode: Mode | None = None,
    mtime_ns: TimeNs | None = None,
    x_upload_content_length: Annotated[int | None, Header(ge=0)] = None,
) -> Response:
    """Simple upload (the body is the file) or the start of a resumable upload session."""
    path = check_path(path)
    if upload_type == "resumable":
        if x_upload_content_length is None:
            raise InvalidRequest("a resumable upload needs X-Upload-Content-Length")
        state = await run_in_threadpool(services.uploads.create, who, path, x_upload_content_length)
        location = f"/v1/uploads/{state.upload_id}"
        body = {"upload_id": state.upload_id, "location": location}
        body["expires"] = iso_from_ns(state.expires_ns)
        return JSONResponse(body, headers={"Location": location})
    if declared_length(request) > MAX_FILE_SIZE:
        raise PayloadTooLarge(f"files are limited to {MAX_FILE_SIZE} bytes")
    node = await services.uploads.receive_whole(who, path, request.stream(), mode, mtime_ns)
    return JSONResponse(node.to_json(), status_code=201)


def _revision_blocks(
    who: PrincipalDep,
    services: ServicesDep,
    path: str | None = None,
    id: NodeId | None = None,
    rev: Revision | None = None,
) -> BlockList:
    """The block list of the file (by path or id) at its current revision or `rev`."""
    return services.metadata.block_list(who, *_path_or_id(path, id), rev)


RevisionBlocks = Annotated[BlockList, Depends(_revision_blocks)]


@router.get("/content", response_class=Response)
def download(
    services: ServicesDep,
    blocks: RevisionBlocks,
    range: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    return file_response(services.blocks, blocks, range, if_none_match)


@router.get("/blocks")
def block_list(blocks: RevisionBlocks) -> dict:
    return {
        "id": blocks.id,
        "rev": blocks.rev,
        "size": blocks.size,
        "blocks": [{"hash": b.hash, "offset": b.offset, "size": b.size} for b in blocks.blocks],
    }


@router.post("/prepare")
def prepare(services: ServicesDep, blocks: RevisionBlocks) -> dict:
    """Ask for the restore of every archived block of a revision at once (a reader met the
    first one): 200 once all are readable, else 503 restoring with Retry-After."""
    services.blocks.prepare_reads(sorted(blocks.archived))
    return {"id": blocks.id, "rev": blocks.rev, "archived": len(blocks.archived)}


@router.get("/history")
def history(
    who: PrincipalDep,
    services: ServicesDep,
    path: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    path = check_path(path)
    revisions = services.metadata.history(who, path, limit)
    return {
        "path": path,
        "revisions": [revision.to_json() for revision in revisions],
        "retention": services.metadata.retention_policy(who).to_json(),
    }


@router.post("/pin")
def pin(who: PrincipalDep, services: ServicesDep, body: RestoreIn) -> dict:
    """Keep revision `rev` whatever the retention policy says (Drive's keepForever)."""
    return services.metadata.pin(who, check_path(body.path), body.rev, True).to_json()


@router.post("/unpin")
def unpin(who: PrincipalDep, services: ServicesDep, body: RestoreIn) -> dict:
    """Let retention treat revision `rev` like any other again."""
    return services.metadata.pin(who, check_path(body.path), body.rev, False).to_json()


@router.post("/restore", status_code=201)
def restore(who: PrincipalDep, services: ServicesDep, body: RestoreIn) -> dict:
    return services.metadata.restore(who, check_path(body.path), body.rev).to_json()


@large_json_post(router, "/commit", status_code=201)
def commit(who: PrincipalDep, services: ServicesDep, body: CommitIn) -> SlicedJSONResponse:
    # Rendered here, in the worker thread: a large commit's answer lists up to 524,289
    # missing hashes, which FastAPI would otherwise encode on the event loop.
    request = commit_request(body)
    try:
        result = services.metadata.commit(who, request)
        response = SlicedJSONResponse(commit_answer(result), 201)
        release([result.missing])
        return response
    finally:
        release([body.blocks, request.blocks])


def commit_request(body: CommitIn) -> CommitRequest:
    """The service's request for a commit body (blocks get their offsets)."""
    blocks, offset = [], 0
    for block in body.blocks:
        blocks.append(BlockRef(block.hash, block.size, offset))
        offset += block.size
    if offset != body.size:
        raise InvalidRequest(f"the blocks add up to {offset} bytes, not size {body.size}")
    return CommitRequest(
        path=check_path(body.path),
        base_rev=body.base_rev,
        size=body.size,
        blocks=blocks,
        mode=body.mode,
        mtime_ns=body.mtime_ns,
        commit_id=body.commit_id,
        attrs=body.posix(),
    )


def commit_answer(result: CommitResult) -> dict:
    return {
        "node": result.node.to_json(),
        "rev": result.rev,
        "status": result.status,
        "missing": result.missing,
        "conflict": result.conflict,
        "path": result.path,
    }


def _path_or_id(path: str | None, node_id: int | None) -> tuple[str | None, int | None]:
    if (path is None) == (node_id is None):
        raise InvalidRequest("give exactly one of path and id")
    return (None if path is None else check_path(path)), node_id
