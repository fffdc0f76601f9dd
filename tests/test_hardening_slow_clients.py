"""Slow and abusive connections: unfinished headers and stalled or trickled bodies are
dropped within their timeouts, connections are capped, and one user cannot have more than
their share of requests in progress."""

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support.hostile import closed_within, raw_connection, read_answer
from tests.support.server import ServerProcess

TIMEOUT_S = 1.0
# The server checks a body's pace once per window: dropped within two windows, plus load.
DROPPED_WITHIN_S = 6.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ("--header-timeout-s", "1", "--body-timeout-s", "1", "--max-connections", "12")
    data = tmp_path_factory.mktemp("strict") / "server"
    server = ServerProcess(data, extra_args=(*args, "--requests-per-user", "2"))
    try:
        yield server.start()
    finally:
        server.stop()
    assert not server.errors_logged(), server.log_tail()


def _post_head(token: str, length: int) -> bytes:
    return (
        f"PUT /v1/blocks/{'a' * 64} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_unfinished_headers_are_dropped(strict: ServerProcess) -> None:
    with raw_connection(strict.port) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # never ends
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"code": "timeout"' in answer
    with raw_connection(strict.port) as sock:  # connected, nothing sent
        assert closed_within(sock, DROPPED_WITHIN_S) is not None


def test_stalled_and_trickled_bodies_are_dropped(strict: ServerProcess) -> None:
    token = strict.add_user("slow")
    with raw_connection(strict.port) as stalled, raw_connection(strict.port) as trickled:
        stalled.sendall(_post_head(token, 100_000) + b"x" * 10)
        trickled.sendall(_post_head(token, 100_000))
        started = time.monotonic()
        trickled.settimeout(0.3)
        closed = None
        while time.monotonic() - started < DROPPED_WITHIN_S and closed is None:
            try:
                trickled.sendall(b"x")
                if trickled.recv(65536) == b"":
                    closed = time.monotonic() - started
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic() - started
        assert closed is not None, "a body trickled a byte at a time was kept"
        assert closed_within(stalled, DROPPED_WITHIN_S) is not None
    # the server still serves
    with strict.client(token) as client:
        assert client.get("/v1/account").status_code == 200


def test_connections_are_capped(strict: ServerProcess) -> None:
    with ExitStack() as stack:
        idle = [stack.enter_context(raw_connection(strict.port)) for _ in range(12)]
        with raw_connection(strict.port) as extra:
            answer = read_answer(extra)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b'"code": "unavailable"' in answer
        assert len(idle) == 12
    # once they are gone, connections are accepted again
    with strict.client() as client:
        deadline = time.monotonic() + DROPPED_WITHIN_S
        while client.get("/v1/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/v1/health").status_code == 200


def test_a_user_has_a_bounded_number_of_requests_in_progress(strict: ServerProcess) -> None:
    token, other = strict.add_user("busy"), strict.add_user("other")
    with raw_connection(strict.port) as first, raw_connection(strict.port) as second:
        for sock in (first, second):  # two requests whose bodies are still coming
            sock.sendall(_post_head(token, 1_000_000) + b"x" * 100_000)
        time.sleep(0.3)
        with strict.client(token) as client:
            refused = client.get("/v1/account")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_requests"
        with strict.client(other) as client:
            assert client.get("/v1/account").status_code == 200
    with strict.client(token) as client:  # their connections gone, the user is served again
        deadline = time.monotonic() + DROPPED_WITHIN_S
        while client.get("/v1/account").status_code == 429 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/v1/account").status_code == 200
