"""The web page: a server-rendered drive browser at `/` (docs/web.md)."""

from fastapi import FastAPI

from backend.web.gate import WebGate


def install(app: FastAPI) -> None:
    """Serve the page beside the API: outermost, so page requests skip the API's guard."""
    app.add_middleware(WebGate, services=app.state.services)
