"""The HTTP connection layer's defences against slow and abusive clients (uvicorn's
httptools protocol, extended).

uvicorn bounds only the idle time between requests (keep-alive). Here each connection also
gets:
- a header deadline: a request's headers must be complete within `header_timeout_s` of its
  first byte (of the connection, for the first request), else 408 and the connection closes;
- a body pace: while a request body is being received, every `body_timeout_s` window must
  bring at least MIN_BODY_BYTES (or the body's end), else the connection is dropped. A
  stalled body and one trickled a byte at a time are both cut; a window in which the server
  itself stopped reading (flow control) does not count against the client;
- a cap on open connections (`max_connections`): one more is answered 503 and closed before
  any request is read.
Transport-level refusals (these, and a request the parser cannot read) answer in the API's
JSON error shape.
"""

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# A body must bring at least this much per window: ~2 KiB/s with the default 30 s window.
MIN_BODY_BYTES = 64 * 1024


def json_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response in the API's error shape, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header and body timeouts and a connection cap. Subclassed by
    guarded_protocol() with the server's settings as class attributes."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 10_000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._window_bytes = 0
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(
                json_error(503, "Service Unavailable", "unavailable", "too many connections")
            )
            transport.close()
            return
        self._arm(self.header_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout_s, self._headers_late)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._window_bytes = 0
        self._arm(self.body_timeout_s, self._body_window_over)

    def on_body(self, body: bytes) -> None:
        self._window_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self.transport.write(json_error(400, "Bad Request", "invalid_request", msg))
        self.transport.close()

    def _headers_late(self) -> None:
        if not self.transport.is_closing():
            message = f"request headers must arrive within {self.header_timeout_s:g} s"
            self.transport.write(json_error(408, "Request Timeout", "timeout", message))
            self.transport.close()

    def _body_window_over(self) -> None:
        if self.transport.is_closing():
            return
        if self._window_bytes < MIN_BODY_BYTES and not self.flow.read_paused:
            self.logger.info("dropping a connection whose request body stalled")
            self.transport.close()  # the handler sees the client gone
            return
        self._window_bytes = 0
        self._arm(self.body_timeout_s, self._body_window_over)

    def _arm(self, seconds: float, callback: object) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def guarded_protocol(
    header_timeout_s: float, body_timeout_s: float, max_connections: int
) -> type[GuardedProtocol]:
    """The protocol class for uvicorn.Config(http=...), with these settings."""
    settings = {
        "header_timeout_s": header_timeout_s,
        "body_timeout_s": body_timeout_s,
        "max_connections": max_connections,
    }
    return type("CirrusProtocol", (GuardedProtocol,), settings)
