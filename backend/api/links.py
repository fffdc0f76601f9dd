"""Public read-only links (docs/sharing.md): made, listed and revoked by their owner, and
served to anyone who has the URL, without a token, until they expire."""

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response
from pydantic import BaseModel, Field

from backend.api.deps import PrincipalDep, ServicesDep, check_path
from backend.api.download import file_response
from backend.metadata.links import MAX_LINK_S

router = APIRouter(prefix="/v1/links", tags=["links"])
public = APIRouter(prefix="/v1/public", tags=["links"])

LinkId = Annotated[int, Field(ge=1, le=2**63 - 1)]
WEEK_S = 7 * 24 * 3600


class LinkIn(BaseModel):
    path: str
    expires_in_s: Annotated[int, Field(ge=1, le=MAX_LINK_S)] = WEEK_S


@router.post("", status_code=201)
def create(who: PrincipalDep, services: ServicesDep, body: LinkIn) -> dict:
    link = services.metadata.create_link(who, check_path(body.path), body.expires_in_s)
    return {**link, "url": f"/v1/public/{link['token']}"}


@router.get("")
def links(who: PrincipalDep, services: ServicesDep) -> dict:
    return {"links": services.metadata.links(who)}


@router.delete("/{link_id}", status_code=204)
def revoke(who: PrincipalDep, services: ServicesDep, link_id: LinkId) -> None:
    services.metadata.revoke_link(who, link_id)


@public.get("/{token}", response_model=None)
def read(
    token: str,
    services: ServicesDep,
    path: str = "/",
    range: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response | dict:
    """The linked file's bytes, or a folder's listing (`path`: below the linked folder)."""
    metadata = services.metadata
    reader = metadata.open_link(token, check_path(path))
    node = metadata.stat(reader.who, reader.path)
    if node.type == "dir":
        entries = metadata.list_dir(reader.who, reader.path)
        return {
            "path": path,
            "type": "dir",
            "entries": [
                {"name": e.name, "type": e.type, "size": e.size, "mtime_ns": e.mtime_ns}
                for e in entries
            ],
        }
    blocks = metadata.block_list(reader.who, reader.path, None, None)
    return file_response(services.blocks, blocks, range, if_none_match)
