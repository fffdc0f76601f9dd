"""Sharing folders between users (docs/sharing.md): share, list, revoke or leave."""

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from backend.api.deps import PrincipalDep, ServicesDep

router = APIRouter(prefix="/v1/shares", tags=["shares"])

ShareId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class ShareIn(BaseModel):
    path: str
    user: Annotated[str, Field(min_length=1, max_length=64)]
    access: Literal["read", "write"] = "read"


@router.get("")
def shares(who: PrincipalDep, services: ServicesDep) -> dict:
    return services.metadata.shares(who)


@router.post("", status_code=201)
def share(who: PrincipalDep, services: ServicesDep, body: ShareIn) -> dict:
    made = services.metadata.share(who, body.path, body.user, body.access)
    return {**made, "user": body.user}


@router.delete("/{share_id}", status_code=204)
def unshare(who: PrincipalDep, services: ServicesDep, share_id: ShareId) -> None:
    services.metadata.unshare(who, share_id)
