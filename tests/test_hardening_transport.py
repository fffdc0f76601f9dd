"""Refusals of the HTTP layer itself answer in the API's JSON error shape."""

import json

import pytest

from tests.support.hostile import raw_connection, read_answer
from tests.support.server import ServerProcess

MALFORMED = [
    b"NOT A REQUEST\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", MALFORMED)
def test_an_unreadable_request_is_a_json_400(shared_server: ServerProcess, request_bytes) -> None:
    with raw_connection(shared_server.port) as sock:
        sock.sendall(request_bytes)
        answer = read_answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "invalid_request"


def test_framework_refusals_are_json(shared_server: ServerProcess) -> None:
    with shared_server.client() as client:
        for answer in (client.delete("/v1/health"), client.get("/v1/nothing")):
            assert answer.status_code in (404, 405)
            assert set(answer.json()["error"]) == {"code", "message"}
