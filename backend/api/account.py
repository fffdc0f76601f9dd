"""Liveness for load balancers, and who the caller is."""

from fastapi import APIRouter

from backend.api.deps import PrincipalDep, ServicesDep

router = APIRouter(prefix="/v1", tags=["account"])


@router.get("/health", openapi_extra={"security": []})
async def health() -> dict:
    """No token, no database: answers while the process can serve requests."""
    return {"status": "ok"}


@router.get("/account")
def account(who: PrincipalDep, services: ServicesDep) -> dict:
    return services.metadata.account(who)
