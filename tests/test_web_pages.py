"""The web page over HTTP against a real `cirrus serve`: cookies, CSP, CSRF, escaping."""

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from markupsafe import escape

from tests.support.lifecycle import HOUR, clocked_server
from tests.support.server import ServerProcess
from tests.support.web import WebSession, csrf_of, set_cookies

clocked_server = clocked_server  # the fixture, for the expired link's test

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


@pytest.fixture(scope="module")
def bob(server: ServerProcess) -> Iterator[WebSession]:
    """A second user's page session: alice shares with him."""
    server.create_user("bob")
    session = WebSession(server, "bob")
    try:
        yield session
    finally:
        session.close()


def node_id(server: ServerProcess, token: str, path: str) -> str:
    with server.client(token) as api:
        answer = api.get("/v1/tree/stat", params={"path": path})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def alert_of(answer) -> str:
    """The error an error page shows (its role="alert" paragraph)."""
    match = re.search(r'role="alert"[^>]*>([^<]*)<', answer.text)
    assert match is not None, answer.text[:500]
    return match.group(1)


def ids_after(page_text: str, action: str) -> list[str]:
    """The ids posted by the forms of one action on a page, in order."""
    return re.findall(
        rf'action="{action}">\s*<input[^>]*>\s*<input type="hidden" name="id" value="(\d+)"',
        page_text,
    )


def test_sharing_a_folder_from_the_page(
    page: WebSession, bob: WebSession, server: ServerProcess, token: str
) -> None:
    name = "team <b>&"
    upload(server, token, f"/{name}/plan.txt", b"the plan")
    upload(server, token, f"/{name}/sub/deep.txt", b"deep")
    folder = node_id(server, token, f"/{name}")
    shared = page.post("/web/share", {"id": folder, "user": " bob ", "access": "read"})
    assert shared.status_code == 303 and shared.headers["location"] == "/web/sharing"
    mine = page.get("/web/sharing").text
    assert escape(f"/{name}") in mine and ">bob<" in mine and ">read-only<" in mine
    assert f"{escape(name)}</a>" in page.get("/web/files").text
    assert "shared with bob (read-only)" in page.get("/web/files").text
    # bob sees the folder in his drive, browses it and downloads from it.
    listing = bob.get("/web/files").text
    assert f"{escape(name)}</a>" in listing and "shared by alice, read-only" in listing
    inside = bob.get("/web/files", params={"path": f"/{name}"})
    assert inside.status_code == 200 and "plan.txt" in inside.text and ">sub<" in inside.text
    assert bob.get("/web/download", params={"path": f"/{name}/plan.txt"}).content == b"the plan"
    # Only owners share: no Share form on a received folder or anything inside it.
    assert "<summary>Share" in page.get("/web/files").text
    assert "<summary>Share" not in listing and "<summary>Share" not in inside.text
    received = bob.get("/web/sharing").text
    assert escape(f"/{name}") in received and ">alice<" in received
    # Read-only: no change inside, and no re-share of what is inside; clear errors.
    bob_folder = bob.get("/web/files", params={"path": f"/{name}"}).text
    mount_id = re.search(r'name="id" value="(\d+)">\s*<label for="new-folder"', bob_folder)[1]
    refused = bob.post("/web/mkdir", {"id": mount_id, "name": "mine"})
    assert refused.status_code == 403 and "read-only" in alert_of(refused)
    reshare = bob.post(
        "/web/share",
        {"id": node_id(server, token, f"/{name}/sub"), "user": "alice", "access": "read"},
    )
    assert reshare.status_code == 403 and "read-only" in alert_of(reshare)
    # alice stops sharing: the folder leaves bob's drive.
    [share_id] = ids_after(mine, "/web/unshare")
    assert page.post("/web/unshare", {"id": share_id}).status_code == 303
    assert escape(name) not in bob.get("/web/files").text
    assert "You share no folder." in page.get("/web/sharing").text
    # Shared again read and write, bob leaves it himself.
    page.post("/web/share", {"id": folder, "user": "bob", "access": "write"})
    assert "shared by alice, read and write" in bob.get("/web/files").text
    [received_id] = ids_after(bob.get("/web/sharing").text, "/web/unshare")
    assert bob.post("/web/unshare", {"id": received_id}).status_code == 303
    assert "Nobody shares a folder with you." in bob.get("/web/sharing").text
    assert "shared with" not in page.get("/web/files").text


def test_share_errors_are_shown_clearly(
    page: WebSession, server: ServerProcess, token: str
) -> None:
    upload(server, token, "/errs/f.txt", b"f")
    folder, file = node_id(server, token, "/errs"), node_id(server, token, "/errs/f.txt")
    cases = [
        ({"id": folder, "user": "nobody", "access": "read"}, 404, "no such user: nobody"),
        ({"id": folder, "user": "alice", "access": "read"}, 400, "own owner"),
        ({"id": folder, "user": "", "access": "read"}, 400, "name the user"),
        ({"id": folder, "user": "bob", "access": "all"}, 400, "access is"),
        ({"id": file, "user": "bob", "access": "read"}, 409, "only folders"),
        ({"id": "1", "user": "bob", "access": "read"}, 400, "not the whole drive"),
        ({"id": "x", "user": "bob", "access": "read"}, 400, "positive whole number"),
    ]
    for form, status, message in cases:
        answer = page.post("/web/share", form)
        assert answer.status_code == status and message in alert_of(answer), (form, answer.text)
    for form in ({"id": file, "expires": "60"}, {"id": "999999999", "expires": "3600"}):
        assert page.post("/web/link", form).status_code in (400, 404), form
    assert page.post("/web/unshare", {"id": "999999999"}).status_code == 404
    assert page.post("/web/link/revoke", {"id": "999999999"}).status_code == 404


def test_public_links_are_made_shown_once_listed_and_revoked(
    page: WebSession, server: ServerProcess, token: str
) -> None:
    upload(server, token, "/pub/<i>report</i>.txt", b"public bytes")
    file = node_id(server, token, "/pub/<i>report</i>.txt")
    made = page.post("/web/link", {"id": file, "expires": "86400"})
    assert made.status_code == 200, made.text
    url = re.search(r'id="made-url" class="url" value="([^"]+)"', made.text)[1]
    assert url.startswith(f"{server.url}/v1/public/")
    secret = url.rsplit("/", 1)[1]
    assert escape("/pub/<i>report</i>.txt") in made.text and "<i>report" not in made.text
    with server.client() as anyone:  # no token, no cookie
        assert anyone.get(url).content == b"public bytes"
    listed = page.get("/web/sharing").text
    assert secret not in listed and escape("/pub/<i>report</i>.txt") in listed
    folder_link = page.post("/web/link", {"id": node_id(server, token, "/pub"), "expires": "3600"})
    assert folder_link.status_code == 200
    link_ids = ids_after(page.get("/web/sharing").text, "/web/link/revoke")
    assert len(link_ids) >= 2
    for link_id in link_ids:
        assert page.post("/web/link/revoke", {"id": link_id}).status_code == 303
    with server.client() as anyone:
        assert anyone.get(url).status_code == 404
    assert "You have no public link that still works." in page.get("/web/sharing").text


def test_forged_share_and_link_forms_are_refused(
    page: WebSession, server: ServerProcess, token: str
) -> None:
    upload(server, token, "/forged/f.txt", b"f")
    folder = node_id(server, token, "/forged")
    forms = [
        ("/web/share", {"id": folder, "user": "bob", "access": "write"}),
        ("/web/link", {"id": folder, "expires": "3600"}),
    ]
    for url, form in forms:
        assert page.post(url, form, csrf="0" * 64).status_code == 403
        assert page.post(url, form, Origin="https://evil.example").status_code == 403
    with server.client(token) as api:
        assert "/forged" not in str(api.get("/v1/shares").json())
        assert "/forged" not in str(api.get("/v1/links").json())


def test_an_expired_link_is_refused(clocked_server: tuple, tmp_path: Path) -> None:
    server, clock = clocked_server
    token = server.create_user("carol")
    upload(server, token, "/soon.txt", b"soon gone")
    page = WebSession(server, "carol")
    try:
        made = page.post(
            "/web/link", {"id": node_id(server, token, "/soon.txt"), "expires": "3600"}
        )
        url = re.search(r'id="made-url" class="url" value="([^"]+)"', made.text)[1]
        with server.client() as anyone:
            assert anyone.get(url).content == b"soon gone"
            clock.advance(HOUR + 60)
            expired = anyone.get(url)
        assert expired.status_code == 410 and expired.json()["error"]["code"] == "link_expired"
        assert "You have no public link that still works." in page.get("/web/sharing").text
    finally:
        page.close()
