"""How large a request body may be, and where large JSON bodies are parsed.

Every route has a body limit, enforced while the body is read (backend/api/guard.py): a
declared Content-Length above it is refused before any byte is read, a chunked body as soon
as it grows past it, with 413 `too_large` and the connection closed. JSON bodies default to
JSON_BODY_MAX; the two routes that carry a whole file's block list (a commit, a batch) take
LARGE_JSON_BODY_MAX, sized to their largest legitimate request; the streamed routes (blocks,
uploads) take the limits their handlers also enforce. A route states its limit with
`body_limit(n)` in its OpenAPI extras, so clients see it in the schema too. Only an
authenticated caller gets to send a body at all.

A large JSON body is parsed (ijson's push parser, PARSE_AT_ONCE bytes per call) and validated
in a worker thread, in pieces that each hold the GIL briefly (see _parse), so it never stalls
the event loop or another request's thread, and at most LARGE_BODY_SLOTS of
them are parsed and handled at a time, which bounds the memory they take together. While
one is, Python's cyclic garbage collector is paused (_collector_paused).
"""

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import ijson
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from backend.api.models import MAX_BLOCKS_PER_FILE, BlockIn

# A namespace call with its longest path, or a /v1/blocks/missing of 10,000 hashes (670 KB).
JSON_BODY_MAX = 1024 * 1024
# A commit naming MAX_BLOCKS_PER_FILE blocks, ~91 bytes each in JSON ({"hash":…,"size":…}),
# with room for a batch's other operations.
LARGE_JSON_BODY_MAX = MAX_BLOCKS_PER_FILE * 96 + 16 * 1024 * 1024
# Bodies above this size are parsed in a worker thread, LARGE_BODY_SLOTS at a time.
OFF_LOOP_BYTES = 256 * 1024
LARGE_BODY_SLOTS = 2
# Blocks validated per call while parsing a large body: one call holds the GIL throughout
# (under 2 ms for 512 on a 2-core machine; 4,096 took 14 ms, each time the event loop waited).
BLOCKS_AT_ONCE = 512
_BLOCKS = TypeAdapter(list[BlockIn])
# Bytes of a large body parsed per call, which holds the GIL throughout: one json.loads of a
# maximal batch (47 MB) held it for ~170 ms, a slice of 1 MiB for ~14 ms, one of 128 KiB ~2 ms.
PARSE_AT_ONCE = 128 * 1024

_large_bodies = asyncio.Semaphore(LARGE_BODY_SLOTS)
_pausing_collector = 0  # large bodies in hand; changed on the event loop's thread only

LIMIT_KEY = "x-cirrus-max-body"

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class LargeJsonRoute(APIRoute):
    """A route whose JSON body may be large: parsed off the event loop, a few at a time."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()
        assert self.body_field is not None, "a LargeJsonRoute takes a JSON body"
        adapter = TypeAdapter(self.body_field.field_info.annotation)

        async def parse_then_handle(request: Request) -> Response:
            body = await request.body()
            if len(body) <= OFF_LOOP_BYTES:
                return await handle(request)
            async with _large_bodies:
                with _collector_paused():
                    # FastAPI takes the body from here; a model passes its validation as is.
                    request._json = await run_in_threadpool(_parse, adapter, body)
                    try:
                        return await handle(request)
                    finally:
                        await run_in_threadpool(_release, request.__dict__.pop("_json"))

        return parse_then_handle


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Automatic cyclic garbage collection off while a large body is in hand.

    A maximal commit becomes millions of Python objects. While they accumulate, CPython runs
    a full collection each time the objects that survived since the last one exceed a quarter
    of the heap: a dozen collections, each walking every object with the GIL held for up to
    half a second, during which no other request moves (another user's p99 was 150 ms, its
    worst 0.5 s). Reference counting frees nearly all garbage anyway; cycles made meanwhile
    wait for the next collection after the body's request ends."""
    global _pausing_collector
    if _pausing_collector == 0:
        gc.disable()
    _pausing_collector += 1
    try:
        yield
    finally:
        _pausing_collector -= 1
        if _pausing_collector == 0:
            gc.enable()


def _parse(adapter: TypeAdapter, body: bytes) -> object:
    """The validated model; a malformed body fails here as FastAPI would fail it.

    Validation never holds the GIL for long (it would stall the event loop, whatever thread
    it runs in): the block lists, the bulk of a large body, are validated BLOCKS_AT_ONCE
    entries per call, letting other threads run in between; the model then takes the
    validated blocks as they are."""
    try:
        data = _loads(body)
    except (ValueError, ijson.JSONError) as exc:
        error = {"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error"}
        raise RequestValidationError([{**error, "input": {}, "ctx": {"error": str(exc)}}]) from None
    breaks = _GilBreaks()
    for holder in _block_lists(data):
        holder["blocks"] = _validated_blocks(holder["blocks"], breaks)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _loads(body: bytes) -> object:
    """The body's JSON value, parsed PARSE_AT_ONCE bytes per call, letting other threads take
    the GIL in between (strict JSON: NaN and trailing data are refused, as FastAPI would)."""
    values = ijson.sendable_list()
    parser = ijson.items_coro(values, "", use_float=True)
    for start in range(0, len(body), PARSE_AT_ONCE):
        parser.send(body[start : start + PARSE_AT_ONCE])
        time.sleep(0)
    parser.close()
    return values[0]


class _GilBreaks:
    """Lets other threads take the GIL once every BLOCKS_AT_ONCE items handled, however
    they are split into lists: a batch of 256 one-block commits then yields once, not 256
    times (each yield to a busy thread waited up to the switch interval: most of a batch
    request's time on the server during an untar)."""

    def __init__(self) -> None:
        self._handled = 0

    def handled(self, count: int) -> None:
        self._handled += count
        if self._handled >= BLOCKS_AT_ONCE:
            self._handled = 0
            time.sleep(0)


def release(lists: Iterable[list]) -> None:
    """Empty each list a slice at a time: freed at once, half a million objects (a large
    body's blocks, a commit's missing hashes) held the GIL, and so every other request,
    for tens to hundreds of milliseconds. Endpoints call it on what they hold before they
    return, since FastAPI frees their arguments at once."""
    breaks = _GilBreaks()
    for items in lists:
        while items:
            breaks.handled(min(len(items), BLOCKS_AT_ONCE))
            del items[-BLOCKS_AT_ONCE:]


def _release(data: object) -> None:
    release(holder["blocks"] for holder in _block_lists(data))


def _block_lists(data: object) -> Iterator[dict]:
    """The objects of a commit or batch body that carry a list of blocks."""
    candidates = [data]
    if isinstance(data, dict) and isinstance(data.get("ops"), list):
        candidates = data["ops"]
    for candidate in candidates:
        if isinstance(candidate, dict) and isinstance(candidate.get("blocks"), list):
            yield candidate


def _validated_blocks(blocks: list, breaks: _GilBreaks) -> list:
    """The list with each slice of BLOCKS_AT_ONCE entries validated into BlockIn models (a
    slice with an error stays as sent: the model's validation then reports it)."""
    checked: list = []
    for start in range(0, len(blocks), BLOCKS_AT_ONCE):
        part = blocks[start : start + BLOCKS_AT_ONCE]
        try:
            checked.extend(_BLOCKS.validate_python(part))
        except ValidationError:
            checked.extend(part)
        breaks.handled(len(part))
    return checked


def large_json_post(router: APIRouter, path: str, **options: Any) -> Callable[[F], F]:
    """`@router.post(path)` for a LargeJsonRoute with LARGE_JSON_BODY_MAX."""

    def register(endpoint: F) -> F:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            route_class_override=LargeJsonRoute,
            openapi_extra=body_limit(LARGE_JSON_BODY_MAX),
            **options,
        )
        return endpoint

    return register


def body_limit(limit: int, **openapi_extra: Any) -> dict[str, Any]:
    """A route's OpenAPI extras stating its body limit (JSON_BODY_MAX when not stated)."""
    return {**openapi_extra, LIMIT_KEY: limit}


def route_limit(route: object) -> int:
    """The body limit of a matched route."""
    return (getattr(route, "openapi_extra", None) or {}).get(LIMIT_KEY, JSON_BODY_MAX)
