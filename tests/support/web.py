"""Driving the web page over HTTP as a browser would, with the cookies kept by hand.

httpx's cookie jar never sends a Secure cookie over plain http, while browsers do to
127.0.0.1; so the page's cookies are read from Set-Cookie and sent back explicitly.
"""

import re
import subprocess
from http.cookies import SimpleCookie

import httpx

from tests.support.server import COMMAND_TIMEOUT_S, ServerProcess, cirrus_executable

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def login_code(server: ServerProcess, user: str) -> str:
    """A one-time login code from `cirrus admin login-code`."""
    result = subprocess.run(
        [cirrus_executable(), "admin", "login-code", user, *server._storage_args()],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """Each cookie the response sets: its value and attributes (flags map to "True")."""
    cookies = {}
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie()
        parsed.load(header)
        for name, morsel in parsed.items():
            attributes = {key: str(value) for key, value in morsel.items() if value}
            flags = {flag.strip().lower() for flag in header.split(";")[1:]}
            attributes.update({flag: "True" for flag in flags if "=" not in flag})
            cookies[name] = {"value": morsel.value, **attributes}
    return cookies


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match is not None, page[:500]
    return match.group(1)


class WebSession:
    """A logged-in page session: the session cookie and the CSRF token of its pages."""

    def __init__(self, server: ServerProcess, user: str) -> None:
        self.client = server.client(follow_redirects=False)
        form = self.client.get("/web/login")
        nonce = set_cookies(form)["cirrus_login"]["value"]
        answer = self.client.post(
            "/web/login",
            data={"code": login_code(server, user), "csrf": csrf_of(form.text)},
            headers={"Cookie": f"cirrus_login={nonce}"},
        )
        assert answer.status_code == 303, answer.text
        self.login_answer = answer
        self.cookie = set_cookies(answer)["cirrus_session"]["value"]
        self.csrf = csrf_of(self.get("/web/files").text)

    def get(self, url: str, **options) -> httpx.Response:
        return self.client.get(url, headers={"Cookie": f"cirrus_session={self.cookie}"}, **options)

    def post(self, url: str, data: dict, csrf: str | None = None, **headers) -> httpx.Response:
        """A form post carrying the session's CSRF token (or the one given)."""
        fields = {**data, "csrf": self.csrf if csrf is None else csrf}
        headers["Cookie"] = f"cirrus_session={self.cookie}"
        return self.client.post(url, data=fields, headers=headers)

    def close(self) -> None:
        self.client.close()
