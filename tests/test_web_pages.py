"""The web page over HTTP against a real `cirrus serve`: cookies, CSP, CSRF, escaping."""

import time
from collections.abc import Iterator

import pytest
from markupsafe import escape

from tests.support.server import ServerProcess
from tests.support.web import WebSession, csrf_of, set_cookies

REVOKED_WITHIN_S = 3.0
HOSTILE_NAMES = [
    "<script>alert(1)<script>.txt",
    '"><img src=x onerror=alert(1)>.txt',
    "..%2F..%2Fetc%2Fpasswd",
    "é" * 127 + "x",  # 255 bytes of UTF-8, the longest name allowed
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("web") / "server") as running:
        yield running


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    return server.create_user("alice")


@pytest.fixture
def page(server: ServerProcess, token: str) -> Iterator[WebSession]:
    session = WebSession(server, "alice")
    try:
        yield session
    finally:
        session.close()


def upload(server: ServerProcess, token: str, path: str, data: bytes) -> None:
    with server.client(token) as api:
        answer = api.post("/v1/files", params={"path": path, "uploadType": "media"}, content=data)
    assert answer.status_code == 201, answer.text


def test_cookies_are_httponly_secure_strict_and_pages_carry_a_csp(page: WebSession) -> None:
    session = set_cookies(page.login_answer)["cirrus_session"]
    assert session["httponly"] == session["secure"] == "True"
    assert session["samesite"] == "strict" and session["path"] == "/"
    for url in ("/web/login", "/web/files", "/web/trash"):
        answer = page.get(url)
        assert answer.status_code == 200, (url, answer.text)
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "<script>" not in answer.text
        assert answer.headers["x-content-type-options"] == "nosniff"
    login_nonce = set_cookies(page.client.get("/web/login"))["cirrus_login"]
    assert login_nonce["httponly"] == login_nonce["secure"] == "True"
    assert login_nonce["samesite"] == "strict"


def test_without_a_session_the_page_sends_the_browser_to_log_in(server: ServerProcess) -> None:
    with server.client(follow_redirects=False) as client:
        for cookie in ("", "cirrus_session=web.not-a-token"):
            answer = client.get("/web/files", headers={"Cookie": cookie})
            assert answer.status_code == 303 and answer.headers["location"] == "/web/login"
        assert client.get("/").headers["location"] == "/web/files"


def test_a_forged_or_stale_login_form_and_a_wrong_code_are_refused(
    server: ServerProcess, token: str
) -> None:
    with server.client(follow_redirects=False) as client:
        form = client.get("/web/login")
        nonce = set_cookies(form)["cirrus_login"]["value"]
        forged = client.post(
            "/web/login",
            data={"code": "x", "csrf": "forged"},
            headers={"Cookie": f"cirrus_login={nonce}"},
        )
        assert forged.status_code == 403 and "cirrus_session" not in set_cookies(forged)
        wrong = client.post(
            "/web/login",
            data={"code": "not-a-code", "csrf": csrf_of(form.text)},
            headers={"Cookie": f"cirrus_login={nonce}"},
        )
        assert wrong.status_code == 401 and 'role="alert"' in wrong.text
        assert "cirrus_session" not in set_cookies(wrong)


def test_plain_http_is_refused_unless_on_loopback_or_behind_a_tls_proxy(
    server: ServerProcess,
) -> None:
    with server.client(follow_redirects=False) as client:
        remote = client.get("/web/login", headers={"Host": "drive.example.com"})
        assert remote.status_code == 400 and "needs HTTPS" in remote.text
        assert "cirrus_login" not in set_cookies(remote)
        proxied = client.get(
            "/web/login", headers={"Host": "drive.example.com", "X-Forwarded-Proto": "https"}
        )
        assert proxied.status_code == 200 and 'name="code"' in proxied.text


def test_hostile_names_are_shown_escaped_and_stay_usable(
    page: WebSession, server: ServerProcess, token: str
) -> None:
    for number, name in enumerate(HOSTILE_NAMES):
        upload(server, token, f"/{name}", f"content {number}".encode())
    listing = page.get("/web/files").text
    assert "<script>alert" not in listing and "<img" not in listing
    for name in HOSTILE_NAMES:
        assert escape(name) in listing
    for number, name in enumerate(HOSTILE_NAMES):
        got = page.get("/web/download", params={"path": f"/{name}"})
        assert got.status_code == 200 and got.content == f"content {number}".encode()
        history = page.get("/web/history", params={"path": f"/{name}"})
        assert history.status_code == 200 and escape(name) in history.text
        assert "<script>alert" not in history.text
    with server.client(token) as api:
        script_id = api.get("/v1/tree/stat", params={"path": f"/{HOSTILE_NAMES[0]}"}).json()["id"]
    # Control characters are refused in names (docs/api.md): a clear error, nothing renamed.
    refused = page.post("/web/rename", {"id": str(script_id), "name": "three\nlines"})
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    renamed = page.post("/web/rename", {"id": str(script_id), "name": "<b>three lines<b>"})
    assert renamed.status_code == 303, renamed.text
    assert escape("<b>three lines<b>") in page.get("/web/files").text
    assert page.get("/web/download", params={"path": "/<b>three lines<b>"}).content == b"content 0"


def test_traversal_and_bad_names_get_a_clear_error_page(page: WebSession) -> None:
    for query in ("/../etc/passwd", "relative", "/a/./b"):
        answer = page.get("/web/files", params={"path": query})
        assert answer.status_code == 400 and 'role="alert"' in answer.text, query
    for name in ("..", "a/b", "é" * 128):
        answer = page.post("/web/mkdir", {"id": "1", "name": name})
        assert answer.status_code == 400 and 'role="alert"' in answer.text, name
    assert page.get("/web/files", params={"path": "/missing"}).status_code == 404


def test_oversized_or_garbled_forms_get_a_clear_error(page: WebSession) -> None:
    big = page.post("/web/mkdir", {"id": "1", "name": "x" * 70_000})
    assert big.status_code == 413 and 'role="alert"' in big.text
    garbled = page.client.post(
        "/web/mkdir",
        content=b"csrf=" + page.csrf.encode() + b"&id=1&name=%ff%fe",
        headers={
            "Cookie": f"cirrus_session={page.cookie}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert garbled.status_code == 400 and "UTF-8" in garbled.text
    script = page.get("/web/static/cirrus.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "script-src 'self'" in script.headers["content-security-policy"]


def test_a_forged_csrf_token_or_foreign_origin_is_refused(
    page: WebSession, server: ServerProcess, token: str
) -> None:
    upload(server, token, "/keep.txt", b"keep")
    with server.client(token) as api:
        keep_id = api.get("/v1/tree/stat", params={"path": "/keep.txt"}).json()["id"]
    for forged in ("", "0" * 64, page.csrf[:-1] + ("0" if page.csrf[-1] != "0" else "1")):
        answer = page.post("/web/delete", {"id": str(keep_id)}, csrf=forged)
        assert answer.status_code == 403, forged
    foreign = page.post("/web/delete", {"id": str(keep_id)}, Origin="https://evil.example")
    assert foreign.status_code == 403
    assert page.get("/web/download", params={"path": "/keep.txt"}).content == b"keep"
    put = page.client.post(
        "/v1/files",
        params={"path": "/sneaky.txt", "uploadType": "media"},
        content=b"x",
        headers={"Cookie": f"cirrus_session={page.cookie}", "X-CSRF-Token": "forged"},
    )
    assert put.status_code == 403 and put.json()["error"]["code"] == "csrf_refused"
    assert page.get("/web/files", params={"path": "/sneaky.txt"}).status_code == 404


def test_a_resumable_upload_from_the_page_uses_the_session(page: WebSession) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB in two ranges
    headers = {"Cookie": f"cirrus_session={page.cookie}", "X-CSRF-Token": page.csrf}
    start = page.client.post(
        "/v1/files",
        params={"path": "/resumed.bin", "uploadType": "resumable"},
        headers={**headers, "X-Upload-Content-Length": str(len(data))},
    )
    assert start.status_code == 200, start.text
    location, half = start.json()["location"], len(data) // 2
    first = page.client.put(
        location,
        content=data[:half],
        headers={**headers, "Content-Range": f"bytes 0-{half - 1}/{len(data)}"},
    )
    assert first.status_code == 308
    last = page.client.put(
        location,
        content=data[half:],
        headers={**headers, "Content-Range": f"bytes {half}-{len(data) - 1}/{len(data)}"},
    )
    assert last.status_code == 201, last.text
    assert page.get("/web/download", params={"path": "/resumed.bin"}).content == data


def test_folders_rename_delete_trash_and_history_restore(
    page: WebSession, server: ServerProcess, token: str
) -> None:
    assert page.post("/web/mkdir", {"id": "1", "name": "work"}).status_code == 303
    upload(server, token, "/work/notes.txt", b"first")
    upload(server, token, "/work/notes.txt", b"second")
    folder = page.get("/web/files", params={"path": "/work"}).text
    assert 'aria-current="page">work<' in folder and "notes.txt" in folder
    history = page.get("/web/history", params={"path": "/work/notes.txt"}).text
    assert "Restore revision 1" in history
    with server.client(token) as api:
        notes_id = api.get("/v1/tree/stat", params={"path": "/work/notes.txt"}).json()["id"]
    assert page.post("/web/restore", {"id": str(notes_id), "rev": "1"}).status_code == 303
    assert page.get("/web/download", params={"path": "/work/notes.txt"}).content == b"first"
    deleted = page.post("/web/delete", {"id": str(notes_id)})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/web/files?path=%2Fwork"
    trash = page.get("/web/trash").text
    assert "/work/notes.txt" in trash
    item = trash.split('action="/web/trash/restore"')[1].split('name="id" value="')[1].split('"')[0]
    assert page.post("/web/trash/restore", {"id": item}).status_code == 303
    assert page.get("/web/download", params={"path": "/work/notes.txt"}).content == b"first"
    page.post("/web/delete", {"id": str(notes_id)})
    assert page.post("/web/trash/purge", {"all": "yes"}).status_code == 303
    assert "The trash is empty." in page.get("/web/trash").text


def test_logging_out_revokes_the_session_token(page: WebSession, server: ServerProcess) -> None:
    token = page.cookie.partition(".")[2]
    with server.client(token) as api:
        assert api.get("/v1/account").status_code == 200
        assert page.post("/web/logout", {}).status_code == 303
        deadline = time.monotonic() + REVOKED_WITHIN_S  # servers cache a token for a second
        while page.get("/web/files").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert page.get("/web/files").headers.get("location") == "/web/login"
        assert api.get("/v1/account").status_code == 401
