"""The trash: deleted files and folders, restored with their subtree or purged for good."""

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from backend.api.deps import PrincipalDep, ServicesDep
from backend.protocol.errors import InvalidRequest

router = APIRouter(prefix="/v1/trash", tags=["trash"])

ItemId = Annotated[int, Field(ge=1, le=2**63 - 1)]
ItemPath = Annotated[int, Path(ge=1, le=2**63 - 1)]


class RestoreIn(BaseModel):
    id: ItemId


class PurgeIn(BaseModel):
    id: ItemId | None = None
    all: bool = False


@router.get("")
def trash(who: PrincipalDep, services: ServicesDep) -> dict:
    return {"items": [item.to_json() for item in services.metadata.trash(who)]}


@router.get("/{item_id}")
def contents(who: PrincipalDep, services: ServicesDep, item_id: ItemPath) -> dict:
    """One item with its nodes (a folder's whole subtree), parents before children."""
    item, nodes = services.metadata.trash_contents(who, item_id)
    return {"item": item.to_json(), "entries": [node.to_json() for node in nodes]}


@router.post("/restore", status_code=201)
def restore(who: PrincipalDep, services: ServicesDep, body: RestoreIn) -> dict:
    return services.metadata.restore_from_trash(who, body.id).to_json()


@router.post("/purge")
def purge(who: PrincipalDep, services: ServicesDep, body: PurgeIn) -> dict:
    """One item by id, or the whole trash with `all` (never both: a typo must not empty it)."""
    if (body.id is None) == (not body.all):
        raise InvalidRequest('give either "id" or "all": true')
    return {"purged": services.metadata.purge_trash(who, body.id)}
