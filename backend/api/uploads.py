"""The resumable upload session calls: ranged PUTs, progress queries and cancel."""

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from backend.api.bodies import body_limit
from backend.api.deps import PrincipalDep, ServicesDep
from backend.api.models import RAW_BODY
from backend.uploads import MAX_FILE_SIZE

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.put(
    "/{upload_id}",
    status_code=201,
    openapi_extra=body_limit(MAX_FILE_SIZE, **RAW_BODY),
    responses={308: {"description": "incomplete; Range: bytes=0-R tells what arrived"}},
)
async def put_range(
    upload_id: str,
    request: Request,
    who: PrincipalDep,
    services: ServicesDep,
    content_range: Annotated[str | None, Header()] = None,
) -> Response:
    """Append `Content-Range: bytes A-B/N` of the file, or ask progress with `bytes */N`."""
    state = await services.uploads.receive_range(who, upload_id, content_range, request.stream())
    if state.node is not None:
        return JSONResponse(state.node.to_json(), status_code=201)
    headers = {"Range": f"bytes=0-{state.received - 1}"} if state.received else {}
    return Response(status_code=308, headers=headers)


@router.delete("/{upload_id}", status_code=204, response_class=Response)
def cancel(upload_id: str, who: PrincipalDep, services: ServicesDep) -> Response:
    services.uploads.cancel(who, upload_id)
    return Response(status_code=204)
