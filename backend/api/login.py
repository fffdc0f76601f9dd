"""Logging a device in: a one-time code from the administrator becomes a device token."""

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from backend.api.deps import ServicesDep
from backend.db.models import DEVICE_LEN

router = APIRouter(prefix="/v1", tags=["account"])


class LoginIn(BaseModel):
    code: Annotated[str, Field(min_length=1, max_length=256)]
    device: Annotated[str | None, Field(min_length=1, max_length=DEVICE_LEN)] = None


@router.post("/login", status_code=201, openapi_extra={"security": []})
async def login(body: LoginIn, services: ServicesDep) -> dict:
    """No bearer token: the code is the credential, spent by this call."""
    new = await run_in_threadpool(services.metadata.login, body.code, body.device)
    return {"user": new.user, "name": new.name, "token": new.token}
