"""The mount's client of the Cirrus HTTP API (docs/api.md), for use from trio.

One `RemoteDrive` holds a pooled `httpx.AsyncClient` (httpx runs on trio through its async
backend). Every call either returns the decoded answer or raises:

    CirrusError (backend.protocol.errors)  the server refused the request (a 4xx with a code);
                                           retrying the same call will fail the same way.
     ├── ServerUnreachable                 no answer, a timeout, a 5xx or a garbled answer;
     │   │                                 the sync engine goes offline and retries later.
     │   └── Throttled (429)               too many requests of the user in progress: the same
     │                                     request is sent again after a short wait
     │                                     (wait_out_throttling), and only a server that keeps
     │                                     refusing for THROTTLE_PATIENCE_S is unreachable.
     └── BlockRestoring (503 "restoring")  a block is coming back from a cold archive class:
                                           block reads wait and ask again (wait_for_restores).

Blocks are zstd-compressed and decompressed in worker threads so that CPU work never stalls
the event loop; a downloaded block is checked against its name, so a corrupt store, proxy or
disk is reported as `HashMismatch` and never reaches a reader. Batch fetches
(`get_blocks`, the bulk of every cold read) do not go through httpx: each runs in a worker
thread on blocking keep-alive connections of its own (`_BlockLine`), receiving the answer,
decoding and verifying it there, and so do block uploads (`put_blocks`: framed and sent in
the thread), so the event loop only waits for the result.
"""

import base64
import contextlib
import errno as _errno
import http.client
import json
import logging
import math
import os
import random
import ssl
import threading
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import trio
import zstandard

from backend.blocks import (
    BATCH_TYPE,
    MAX_BATCH_BLOCKS,
    looks_compressible,
    store_frame,
    unpack_batch,
)
from backend.protocol.chunking import MAX_BLOCK_SIZE
from backend.protocol.errors import (
    BlockRestoring,
    CirrusError,
    HashMismatch,
    InvalidPathError,
    InvalidRequest,
    QuotaExceeded,
)
from backend.protocol.errors import from_json as error_from_json
from backend.protocol.hashing import block_hash, is_block_hash

# Measured on 512 KiB blocks here: source text compresses to 26.4% at level 3 (270 MB/s per
# core) and 28.6% at level 1 (372 MB/s); random data passes through at over 5 GB/s at both.
# Level 3 still outruns gigabit Ethernet (~117 MB/s) on one core, so its smaller output wins.
ZSTD_LEVEL = 3
# The server accepts at most this many hashes in one /v1/blocks/missing request.
MISSING_BATCH = 10_000
# Extra time a long poll may take beyond the wait the server was asked for.
POLL_MARGIN = 15.0
POLL_MIN, POLL_MAX = 1, 300
# The longest a read waits between two asks for a block being restored from the archive.
RESTORE_POLL_MAX_S = 60.0
# A request refused with 429 is sent again after THROTTLE_FIRST_S, doubling (with jitter, so
# that the mount's concurrent requests do not come back in step) up to the server's
# Retry-After; after THROTTLE_PATIENCE_S of refusals the server counts as unreachable.
THROTTLE_FIRST_S = 0.05
THROTTLE_PATIENCE_S = 30.0

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServerUnreachable(CirrusError):
    """The server could not be reached or did not answer properly; try again later."""

    code, status, errno = "unreachable", 503, _errno.EIO


class Throttled(ServerUnreachable):
    """429: the server holds the user to a number of requests in progress (or of open
    uploads); the request may be sent again, no sooner than Retry-After asks."""

    retry_after = 1.0


def _refusal(status: int, body: object, retry_after: str | None) -> CirrusError:
    """The error an answer of status >= 400 stands for: the server's code for a refusal or
    a block being restored from the archive (503 "restoring", waited for). A 429 is
    Throttled (sent again shortly). Any other 5xx, 507 insufficient_storage included, is the
    server's trouble (ServerUnreachable: the mount keeps its data and tries again later)
    except a full quota, a refusal that the sync engine keeps retrying until space is freed."""
    error = error_from_json(status, body)
    if isinstance(error, BlockRestoring):
        with contextlib.suppress(ValueError, TypeError):
            error.retry_after = max(1, int(retry_after))  # type: ignore[arg-type]
        return error
    if status == 429:
        throttled = Throttled(f"HTTP 429: {error.message}")
        with contextlib.suppress(ValueError, TypeError):
            throttled.retry_after = max(THROTTLE_FIRST_S, float(retry_after or ""))
        return throttled
    if status >= 500 and not isinstance(error, QuotaExceeded):
        return ServerUnreachable(f"HTTP {status}: {error.message}")
    return error


async def wait_out_throttling(send: Callable[[], Awaitable[T]]) -> T:
    """send(), again while the server answers 429, for up to THROTTLE_PATIENCE_S: a writer's
    upload or a reader's fetch waits its turn instead of failing or taking the mount
    offline."""
    deadline = trio.current_time() + THROTTLE_PATIENCE_S
    delay = THROTTLE_FIRST_S
    while True:
        try:
            return await send()
        except Throttled as exc:
            wait = random.uniform(delay / 2, delay)
            if trio.current_time() + wait > deadline:
                raise
            await trio.sleep(wait)
            delay = min(delay * 2, exc.retry_after)


async def wait_for_restores(
    fetch: Callable[[], Awaitable[T]], restoring: Callable[[], Awaitable[None]] | None = None
) -> T:
    """fetch(), again and again while the server answers that a block is being restored
    from a cold archive class: a read waits (like a slow disk) instead of failing. Asks
    again after 1 s, 2 s, 4 s ... up to the server's Retry-After or RESTORE_POLL_MAX_S.
    `restoring` runs at the first such answer (the reader's file asks for all its blocks)."""
    delay = 1.0
    while True:
        try:
            return await fetch()
        except BlockRestoring as exc:
            if restoring is not None:
                await restoring()
                restoring = None
            wait = min(delay, exc.retry_after, RESTORE_POLL_MAX_S)
            log.warning("%s; asking again in %.0f s", exc.message, wait)
            await trio.sleep(wait)
            delay *= 2


def _frame(data: bytes) -> bytes:
    """A block's zstd frame; data that a probe finds incompressible (media, archives) is
    framed at memory speed instead of going through level 3 for nothing."""
    if looks_compressible(data):
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    return store_frame(data)


def _pack(blocks: list[tuple[str, bytes | memoryview]]) -> list[bytes]:
    """The parts of the batch body (`pack_batch`'s layout) of (hash, plaintext) blocks, each
    compressed: sent one after the other rather than first copied into one body."""
    parts = []
    for name, data in blocks:
        frame = _frame(data)
        parts += (_check_hash(name).encode("ascii") + len(frame).to_bytes(8, "big"), frame)
    return parts


def _unpack(hashes: list[str], body: bytes) -> dict[str, bytes]:
    """The verified blocks of a fetch answer, which must hold exactly the hashes asked for."""
    frames = unpack_batch(body, ServerUnreachable)
    if [name for name, _frame in frames] != hashes:
        raise ServerUnreachable("the server answered with other blocks than those asked for")
    return {name: _decode_block(name, frame) for name, frame in frames}


def _decode_block(expected: str, frame: bytes | memoryview) -> bytes:
    """Decompress one block frame (never beyond MAX_BLOCK_SIZE) and check its name."""
    try:
        size = zstandard.frame_content_size(frame)
        if size > MAX_BLOCK_SIZE:
            raise HashMismatch(f"block {expected} claims {size} bytes, over the block limit")
        data = zstandard.ZstdDecompressor().decompress(frame, max_output_size=MAX_BLOCK_SIZE)
    except zstandard.ZstdError as exc:
        raise HashMismatch(f"block {expected} is not a valid zstd frame: {exc}") from None
    if block_hash(data) != expected:
        raise HashMismatch(f"block {expected} does not match its hash")
    return data


def _check_hash(value: str) -> str:
    if not isinstance(value, str) or not is_block_hash(value):
        raise InvalidRequest(f"not a block hash: {value!r}")
    return value


def _check_path(path: str) -> str:
    """Refuse what cannot travel in a URL (undecodable names); the server checks the rest."""
    try:
        path.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        raise InvalidPathError(f"path is not valid UTF-8: {path!r}") from None
    return path


def refusal(result: dict) -> CirrusError | None:
    """The error of one batch result, as the single call would have raised it; None if it
    succeeded."""
    if "error" not in result:
        return None
    return error_from_json(result.get("status", 400), result)


def _optional(**fields: Any) -> dict[str, Any]:
    """Drop the fields left at None so the server applies its own defaults."""
    return {key: value for key, value in fields.items() if value is not None}


class _BlockLine:
    """`POST /v1/blocks/fetch` and `/v1/blocks/batch` over blocking keep-alive connections,
    called in worker threads.

    A cold read receives hundreds of MB/s, and an upload sends as much. Through httpx on the
    trio thread every 64 KiB of it took a trip through h11, httpcore and trio's scheduler,
    and that thread, which also answers FUSE, was the bound: a large write waited behind its
    own early upload. Here the body is sent and the answer taken whole in C with the GIL
    released, and blocks are framed, or decoded and verified, in the same thread: the trio
    thread only waits.
    """

    def __init__(
        self, base_url: str, headers: dict[str, str], timeout: httpx.Timeout, connections: int
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        self._tls = ssl.create_default_context() if url.scheme == "https" else None
        self._host, self._port = url.hostname or "", url.port
        self._prefix = url.path.rstrip("/") + "/v1/blocks/"
        self._headers = headers
        self._connect_timeout, self._timeout = timeout.connect, timeout.read
        self._connections = connections
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def fetch(self, hashes: list[str]) -> dict[str, bytes]:
        """The verified blocks named by `hashes` (64 at most), from one request."""
        body = json.dumps({"hashes": hashes}).encode("ascii")
        headers = {"Content-Type": "application/json", "Accept": BATCH_TYPE}
        return _unpack(hashes, self._post("fetch", [body], headers))

    def store(self, blocks: list[tuple[str, bytes | memoryview]]) -> None:
        """Frame (hash, plaintext) blocks and send them in one request."""
        self._post("batch", _pack(blocks), {"Content-Type": BATCH_TYPE})

    def _post(self, what: str, parts: list[bytes], headers: dict[str, str]) -> bytes:
        """The answer's body, a refusal raised as the CirrusError it names."""
        url = self._prefix + what
        headers = {**self._headers, **headers, "Content-Length": str(sum(map(len, parts)))}
        while True:
            connection, reused = self._take(url)
            cut_off = False
            try:
                try:
                    connection.request("POST", url, parts, headers)
                except (ConnectionResetError, BrokenPipeError):
                    # A server refusing a body (a 429, a 413) answers before reading it and
                    # closes: its answer is there to read all the same.
                    cut_off = True
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                reset = cut_off or isinstance(exc, ConnectionResetError | BrokenPipeError)
                if reused and reset:
                    continue  # a kept-alive connection the server had closed meanwhile
                detail = str(exc) or type(exc).__name__
                raise ServerUnreachable(f"POST {url}: {detail}") from None
            self._give(connection, response.will_close or cut_off)
            break
        if response.status >= 400:
            try:
                refusal = json.loads(answer)
            except ValueError:
                refusal = None
            raise _refusal(response.status, refusal, response.getheader("Retry-After"))
        return answer

    def _take(self, url: str) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (reused: True) or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self._tls is not None:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._tls
            )
        else:
            connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self._connect_timeout
            )
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            raise ServerUnreachable(f"POST {url}: {exc or type(exc).__name__}") from None
        connection.sock.settimeout(self._timeout)
        return connection, False

    def _give(self, connection: http.client.HTTPConnection, will_close: bool) -> None:
        with self._lock:
            if not (will_close or self._closed or len(self._idle) >= self._connections):
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when their request returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class RemoteDrive:
    """An authenticated connection pool to one user's drive on a Cirrus server."""

    def __init__(
        self,
        base_url: str,
        token: str,
        device: str | None = None,
        *,
        timeout: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if device is not None:
            headers["X-Cirrus-Device"] = device
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        # Compression and hashing hold a core each: more threads than cores only queue up.
        self._cpu = trio.CapacityLimiter(os.cpu_count() or 1)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/v1",
            headers=headers,
            timeout=self._timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._blocks = _BlockLine(base_url, headers, self._timeout, max_connections)
        self._lines = trio.CapacityLimiter(max_connections)

    async def aclose(self) -> None:
        self._blocks.close()
        await self._client.aclose()

    async def __aenter__(self) -> "RemoteDrive":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request and turn every failure into a CirrusError; a 429 is waited out."""
        return await wait_out_throttling(lambda: self._send_once(method, url, **kwargs))

    async def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise ServerUnreachable(f"{method} {url}: {detail}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise _refusal(response.status_code, body, response.headers.get("Retry-After"))
        return response

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self._send(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ServerUnreachable(f"{method} {url}: the answer is not JSON") from None

    # -- account and changes ------------------------------------------------------------------

    async def account(self) -> dict:
        return await self._json("GET", "/account")

    async def usage(self) -> dict:
        """{"used", "quota", "free", "total"} in bytes (quota None: none)."""
        return await self._json("GET", "/usage")

    async def snapshot(self, after_id: int, limit: int = 1000) -> dict:
        return await self._json("GET", "/snapshot", params={"after_id": after_id, "limit": limit})

    async def changes(self, cursor: int, limit: int = 1000) -> dict:
        return await self._json("GET", "/changes", params={"cursor": cursor, "limit": limit})

    async def poll(self, cursor: int, timeout: float) -> dict:
        """Wait up to `timeout` seconds (rounded up, clamped to 1..300) for the journal to move."""
        wait = min(max(math.ceil(timeout), POLL_MIN), POLL_MAX)
        limits = self._timeout.as_dict()
        limits["read"] = max(limits["read"] or 0.0, wait + POLL_MARGIN)
        return await self._json(
            "GET",
            "/changes/poll",
            params={"cursor": cursor, "timeout": wait},
            timeout=httpx.Timeout(**limits),
        )

    # -- tree ---------------------------------------------------------------------------------

    async def stat(self, path: str) -> dict:
        return await self._json("GET", "/tree/stat", params={"path": _check_path(path)})

    async def list_dir(self, path: str) -> list[dict]:
        answer = await self._json("GET", "/tree/list", params={"path": _check_path(path)})
        return answer["entries"]

    async def mkdir(
        self, path: str, mode: int | None = None, mtime_ns: int | None = None, parents: bool = False
    ) -> dict:
        body = _optional(path=_check_path(path), mode=mode, mtime_ns=mtime_ns)
        return await self._json("POST", "/tree/mkdir", json={**body, "parents": parents})

    async def symlink(self, path: str, target: str, mtime_ns: int | None = None) -> dict:
        body = _optional(path=_check_path(path), target=target, mtime_ns=mtime_ns)
        return await self._json("POST", "/tree/symlink", json=body)

    async def move(self, src: str, dst: str, mode: str = "replace") -> dict:
        body = {"from": _check_path(src), "to": _check_path(dst), "mode": mode}
        return await self._json("POST", "/tree/move", json=body)

    async def delete(self, path: str, recursive: bool = False) -> list[int]:
        body = {"path": _check_path(path), "recursive": recursive}
        return (await self._json("POST", "/tree/delete", json=body))["deleted"]

    async def setattr(
        self, path: str, mode: int | None = None, mtime_ns: int | None = None
    ) -> dict:
        body = _optional(path=_check_path(path), mode=mode, mtime_ns=mtime_ns)
        return await self._json("POST", "/tree/setattr", json=body)

    async def set_xattr(self, path: str, name: str, value: bytes | None) -> dict:
        """Set an extended attribute (`user.` names only); None removes it."""
        encoded = None if value is None else base64.b64encode(value).decode("ascii")
        body = {"path": _check_path(path), "name": name, "value": encoded}
        return await self._json("POST", "/tree/xattr", json=body)

    # -- files and blocks ---------------------------------------------------------------------

    async def block_list(self, node_id: int, rev: int | None = None) -> dict:
        params = _optional(id=node_id, rev=rev)
        return await self._json("GET", "/files/blocks", params=params)

    async def prepare(self, node_id: int, rev: int) -> None:
        """Ask the server to restore every archived block of a revision at once; a 503
        restoring (the expected answer) is not an error here."""
        with contextlib.suppress(BlockRestoring):
            await self._json("POST", "/files/prepare", params=_optional(id=node_id, rev=rev))

    async def missing_blocks(self, hashes: list[str]) -> list[str]:
        """Return the hashes the server lacks for this user, asking in batches it accepts."""
        missing: list[str] = []
        for start in range(0, len(hashes), MISSING_BATCH):
            batch = hashes[start : start + MISSING_BATCH]
            answer = await self._json("POST", "/blocks/missing", json={"hashes": batch})
            missing.extend(answer["missing"])
        return missing

    async def put_block(self, hash: str, data: bytes) -> None:
        """Upload one block; the caller names it (the server recomputes and refuses a lie)."""
        await self.put_blocks([(hash, data)])

    async def put_blocks(self, blocks: list[tuple[str, bytes]]) -> None:
        """Upload (hash, data) blocks in one request (at most 64 and 64 MiB framed); the
        server verifies every name and stores none of them if one is a lie."""
        if len(blocks) > MAX_BATCH_BLOCKS:
            raise InvalidRequest(f"send at most {MAX_BATCH_BLOCKS} blocks at once")
        # Abandoned on cancellation, like a fetch: the thread touches only its connection.
        await wait_out_throttling(
            lambda: trio.to_thread.run_sync(
                self._blocks.store, blocks, limiter=self._lines, abandon_on_cancel=True
            )
        )

    async def get_blocks(
        self, hashes: list[str], restoring: Callable[[], Awaitable[None]] | None = None
    ) -> dict[str, bytes]:
        """Download blocks by hash, up to 64 per request, each verified against its name
        (`restoring`: as for wait_for_restores)."""
        wanted = [_check_hash(name) for name in dict.fromkeys(hashes)]
        found: dict[str, bytes] = {}
        for start in range(0, len(wanted), MAX_BATCH_BLOCKS):
            batch = wanted[start : start + MAX_BATCH_BLOCKS]
            # Abandoned on cancellation (an unmount does not wait for a slow server): the
            # thread only touches the fetcher, and its connection closes when it returns.
            found |= await wait_for_restores(
                lambda batch=batch: wait_out_throttling(
                    lambda: trio.to_thread.run_sync(
                        self._blocks.fetch, batch, limiter=self._lines, abandon_on_cancel=True
                    )
                ),
                restoring,
            )
        return found

    async def get_block(
        self, hash: str, restoring: Callable[[], Awaitable[None]] | None = None
    ) -> bytes:
        """Download one block and verify it against its name (HashMismatch otherwise)."""
        _check_hash(hash)
        response = await wait_for_restores(lambda: self._send("GET", f"/blocks/{hash}"), restoring)
        return await trio.to_thread.run_sync(
            _decode_block, hash, response.content, limiter=self._cpu
        )

    async def commit(
        self,
        path: str,
        base_rev: int | None,
        size: int,
        blocks: list[tuple[str, int]],
        mode: int | None = None,
        mtime_ns: int | None = None,
        commit_id: str | None = None,
    ) -> dict:
        """Record a new revision made of `blocks` (hash, size); see docs/api.md for conflicts."""
        body = _optional(mode=mode, mtime_ns=mtime_ns, commit_id=commit_id)
        body.update(
            path=_check_path(path),
            base_rev=base_rev,
            size=size,
            blocks=[{"hash": block, "size": length} for block, length in blocks],
        )
        return await self._json("POST", "/files/commit", json=body)

    async def batch(self, ops: list[dict], client: str, stop_on_error: bool = True) -> list[dict]:
        """Apply namespace operations in order in one request (POST /v1/batch); one result
        per operation tried, `{"status", "body"}` or `{"status", "error"}` (see
        `refusal`). Ops carrying a `seq` are never applied twice for this `client`."""
        body = {"ops": ops, "client": client, "stop_on_error": stop_on_error}
        answer = await self._json("POST", "/batch", json=body)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or not 0 < len(results) <= len(ops):
            raise ServerUnreachable("the batch answer does not match the operations sent")
        return results

    async def download(self, path: str) -> bytes:
        """The whole current content of a file, in memory: for tools and tests, not the mount."""
        response = await self._send("GET", "/files/content", params={"path": _check_path(path)})
        return response.content

    async def history(self, path: str, limit: int = 100) -> list[dict]:
        """The file's revisions, newest first (at most `limit`, 1..1000)."""
        params = {"path": _check_path(path), "limit": limit}
        return (await self._json("GET", "/files/history", params=params))["revisions"]

    async def trash(self) -> list[dict]:
        """The trash items, most recently deleted first."""
        return (await self._json("GET", "/trash"))["items"]

    async def trash_contents(self, item_id: int) -> list[dict]:
        """The nodes of a trash item as they were, parents before children."""
        return (await self._json("GET", f"/trash/{int(item_id)}"))["entries"]
