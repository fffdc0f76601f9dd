"""Request bodies: nobody without a token makes the server hold a body, and every route
refuses a body larger than its limit with 413 too_large while reading it."""

import gc
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from backend.api import bodies
from backend.api.bodies import _collector_paused
from tests.support.hostile import memory_kib, raw_connection, send_until_refused
from tests.support.server import ServerProcess

BODY_BYTES = 40 * 1024 * 1024
PARALLEL = 6
# What the server may grow by while refusing all of them (it would hold 240 MB if it read them).
GROWTH_KIB = 48 * 1024


def _unauthenticated_post(port: int) -> bytes:
    head = (
        b"POST /v1/blocks/missing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % BODY_BYTES
    )
    with raw_connection(port) as sock:
        return send_until_refused(sock, head, BODY_BYTES)


def test_bodies_without_a_token_are_refused_unread(server: ServerProcess) -> None:
    with server.client() as client:  # warm up: the first requests allocate caches
        assert client.post("/v1/blocks/missing", json={"hashes": []}).status_code == 401
    before = memory_kib(server.process.pid)["VmHWM"]
    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = list(pool.map(_unauthenticated_post, [server.port] * PARALLEL))
    after = memory_kib(server.process.pid)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b'"code":"unauthorized"' in answer
    assert after["VmHWM"] - before < GROWTH_KIB, (before, after)


def test_an_oversized_json_body_is_413_and_changes_nothing(new_user) -> None:
    client: httpx.Client = new_user()
    padded = b'{"path": "/big"' + b" " * (2 * 1024 * 1024) + b"}"
    answer = client.post(
        "/v1/tree/mkdir", content=padded, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "too_large"

    def chunks():  # no Content-Length: refused while reading
        yield b'{"path": "/big"'
        for _ in range(64):
            yield b" " * 65536
        yield b"}"

    answer = client.post(
        "/v1/tree/mkdir", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "too_large"
    assert client.get("/v1/tree/stat", params={"path": "/big"}).status_code == 404


def test_a_block_body_beyond_a_frame_is_413(new_user) -> None:
    client: httpx.Client = new_user()
    answer = client.put("/v1/blocks/" + "a" * 64, content=b"\0" * (5 * 1024 * 1024))
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"


def test_a_login_body_needs_no_token_but_stays_small(server: ServerProcess) -> None:
    """The one-time code is the login's credential: no token asked, a few KB at most."""
    with server.client() as client:
        answer = client.post("/v1/login", json={"code": "not-a-code"})
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthorized"
        answer = client.post("/v1/login", json={"code": "x" * 8192})
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "too_large"


def test_the_garbage_collector_pauses_while_large_bodies_are_in_hand() -> None:
    """Full collections walking a large body's millions of objects stalled every other
    request (backend/api/bodies.py): paused until the last large body is done, even one
    whose handling failed."""
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _collector_paused():
        assert not gc.isenabled()
        with _collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the other large body is still in hand"
        raise RuntimeError("a refused body")
    assert gc.isenabled()


def test_freeing_many_small_lists_yields_the_gil_per_slice_not_per_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of one-block commits frees one short list per operation: the server yields
    the GIL once per BLOCKS_AT_ONCE items freed, since each yield to a busy thread could
    wait a whole switch interval. A single long list still yields every slice."""
    yields: list[float] = []
    monkeypatch.setattr(bodies.time, "sleep", yields.append)
    small = [[object()] for _ in range(3 * bodies.BLOCKS_AT_ONCE)]
    bodies.release(small)
    assert all(not items for items in small)
    assert len(yields) == 3
    yields.clear()
    long = [list(range(4 * bodies.BLOCKS_AT_ONCE))]
    bodies.release(long)
    assert long == [[]]
    assert len(yields) == 4
