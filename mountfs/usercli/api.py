"""A blocking client of the Cirrus API for the user commands: every failure is one CliError.

The mount's client (mountfs.remote) runs on trio inside the mount; a command line tool makes
a handful of calls in a row, so a plain `httpx.Client` serves it. Refusals keep the server's
message (`no such file or folder: /a.txt`); an unreachable server is named with the reason.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from backend.protocol.errors import from_json
from mountfs.usercli.context import CliError, Context

TIMEOUT_S = 30.0


class Api:
    def __init__(self, context: Context) -> None:
        self.server = context.server
        headers = {"Authorization": f"Bearer {context.token}"}
        if context.device:
            headers["X-Cirrus-Device"] = context.device
        self._client = httpx.Client(
            base_url=context.server,
            headers=headers,
            timeout=httpx.Timeout(TIMEOUT_S, connect=10.0),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; 4xx and 5xx answers and transport failures raise CliError."""
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.server, exc) from None
        check(response)
        return response

    @contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self._client.stream(method, url, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                check(response)
                yield response
        except httpx.TransportError as exc:
            raise unreachable(self.server, exc) from None

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{method} {url}: the server's answer is not JSON") from None

    def stat(self, path: str) -> dict | None:
        """The node at a drive path, None when there is none."""
        try:
            return self.json("GET", "/v1/tree/stat", params={"path": path})
        except NotFoundError:
            return None


class NotFoundError(CliError):
    """The server answered 404 not_found."""


def check(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    if status >= 500:
        raise CliError(f"the server failed (HTTP {status}); try again later")
    try:
        body = response.json()
    except ValueError:
        body = None
    error = from_json(status, body)
    if error.code == "unauthorized":
        raise CliError(f"the server refused the token ({error.message}); `cirrus login` again")
    if error.code == "not_found":
        raise NotFoundError(error.message)
    raise CliError(error.message)


def unreachable(server: str, exc: Exception) -> CliError:
    return CliError(f"cannot reach {server}: {str(exc) or type(exc).__name__}")
