"""Resumable uploads (Google Drive's protocol), including a server crash in the middle."""

import os

import httpx
import pytest

from backend.protocol.chunking import iter_chunks
from backend.protocol.hashing import block_hash
from tests.support.server import ServerProcess

DATA = os.urandom(2 * 1024 * 1024 + 777)
PART = 1024 * 1024


def start(client: httpx.Client, path: str, total: int) -> str:
    response = client.post(
        "/v1/files",
        params={"uploadType": "resumable", "path": path},
        headers={"X-Upload-Content-Length": str(total)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["Location"] == body["location"] == f"/v1/uploads/{body['upload_id']}"
    assert body["expires"].endswith("Z")
    return body["location"]


def put(client: httpx.Client, location: str, first: int, last: int, data: bytes = DATA):
    return client.put(
        location,
        content=data[first : last + 1],
        headers={"Content-Range": f"bytes {first}-{last}/{len(data)}"},
    )


def progress(client: httpx.Client, location: str, total: int = len(DATA)) -> httpx.Response:
    return client.put(location, headers={"Content-Range": f"bytes */{total}"})


def download(client: httpx.Client, path: str) -> bytes:
    response = client.get("/v1/files/content", params={"path": path})
    assert response.status_code == 200, response.text
    return response.content


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_upload_in_parts(new_user) -> None:
    alice = new_user(device="desk")
    location = start(alice, "/up/a.bin", len(DATA))
    assert progress(alice, location).status_code == 308
    assert "Range" not in progress(alice, location).headers
    first = put(alice, location, 0, PART - 1)
    assert first.status_code == 308 and first.headers["Range"] == f"bytes=0-{PART - 1}"
    # A retry of bytes already received is harmless, and an overlap only adds the new part.
    assert put(alice, location, 0, PART - 1).headers["Range"] == f"bytes=0-{PART - 1}"
    assert (
        put(alice, location, PART - 10, 2 * PART - 1).headers["Range"] == f"bytes=0-{2 * PART - 1}"
    )
    done = put(alice, location, 2 * PART, len(DATA) - 1)
    assert done.status_code == 201, done.text
    assert done.json()["path"] == "/up/a.bin" and done.json()["size"] == len(DATA)
    assert download(alice, "/up/a.bin") == DATA
    history = alice.get("/v1/files/history", params={"path": "/up/a.bin"}).json()
    assert history["revisions"][0]["device"] == "desk"
    assert progress(alice, location).status_code == 404  # the session is gone


def test_empty_resumable_upload(new_user) -> None:
    alice = new_user()
    location = start(alice, "/zero", 0)
    done = progress(alice, location, total=0)
    assert done.status_code == 201 and done.json()["size"] == 0


def test_upload_survives_a_server_crash(server) -> None:
    token = server.create_user("alice")
    with server.client(token) as alice:
        location = start(alice, "/crash.bin", len(DATA))
        assert put(alice, location, 0, PART - 1).status_code == 308
    server.kill()
    server.start()
    with server.client(token) as alice:
        answer = progress(alice, location)
        assert answer.status_code == 308 and answer.headers["Range"] == f"bytes=0-{PART - 1}"
        resume_at = int(answer.headers["Range"].rsplit("-", 1)[1]) + 1
        done = put(alice, location, resume_at, len(DATA) - 1)
        assert done.status_code == 201, done.text
        assert download(alice, "/crash.bin") == DATA


def test_a_session_continues_on_another_server_after_the_first_is_killed(tmp_path) -> None:
    """Two servers share the database, the block store and the key, not a disk: the server
    that started the session dies, and the other one takes its next PUTs."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "master.key").write_bytes(os.urandom(32))
    options = ("--blocks", str(shared / "blocks"), "--key-file", str(shared / "master.key"))
    db_url = f"sqlite:///{shared / 'metadata.db'}"
    first, second = (
        ServerProcess(tmp_path / name, db_url=db_url, extra_args=options) for name in "ab"
    )
    try:
        first.start()
        second.start()
        token = first.create_user("alice")
        with first.client(token) as on_a, second.client(token) as on_b:
            location = start(on_a, "/moved.bin", len(DATA))
            # Less than one block, then past one: both the uncut tail and stored blocks.
            assert put(on_a, location, 0, 99_999).status_code == 308
            assert put(on_a, location, 100_000, PART + 99_999).status_code == 308
            first.kill()
            assert progress(on_b, location).headers["Range"] == f"bytes=0-{PART + 99_999}"
            assert put(on_b, location, PART + 100_000, 2 * PART).status_code == 308
            done = put(on_b, location, 2 * PART + 1, len(DATA) - 1)
            assert done.status_code == 201, done.text
            assert download(on_b, "/moved.bin") == DATA
            blocks = on_b.get("/v1/files/blocks", params={"path": "/moved.bin"}).json()["blocks"]
        # Cut where the whole file is cut, so uploads dedupe against the mount's blocks.
        assert [(b["offset"], b["hash"]) for b in blocks] == [
            (chunk.offset, block_hash(chunk.data)) for chunk in iter_chunks(DATA)
        ]
    finally:
        first.stop()
        second.stop()
    assert first.errors_logged() == [] and second.errors_logged() == [], second.log_tail()


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 416),
        ("bytes 0-9", 416),
        ("bytes=0-9/100", 416),
        ("bytes 9-0/100", 416),
        ("bytes 0-100/100", 416),
        ("bytes -1-9/100", 416),
        ("bytes 0-9/99", 416),  # not the announced total
        ("bytes 50-59/100", 416),  # a gap: nothing received yet
    ],
)
def test_bad_content_range_changes_nothing(new_user, header: str | None, status: int) -> None:
    alice = new_user()
    location = start(alice, "/f", 100)
    headers = {} if header is None else {"Content-Range": header}
    response = alice.put(location, content=b"x" * 10, headers=headers)
    assert response.status_code == status and error_code(response) == "bad_range"
    assert "Range" not in progress(alice, location, total=100).headers


@pytest.mark.parametrize("body", [b"x" * 5, b"x" * 15])
def test_body_not_matching_the_range_changes_nothing(new_user, body: bytes) -> None:
    alice = new_user()
    location = start(alice, "/f", 100)
    response = alice.put(location, content=body, headers={"Content-Range": "bytes 0-9/100"})
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert "Range" not in progress(alice, location, total=100).headers


def test_cancel_and_unknown_sessions(new_user) -> None:
    alice = new_user()
    location = start(alice, "/c", 10)
    assert alice.delete(location).status_code == 204
    assert progress(alice, location, total=10).status_code == 404
    assert alice.delete(location).status_code == 404
    assert progress(alice, "/v1/uploads/no-such-upload", total=10).status_code == 404
    assert alice.get("/v1/tree/stat", params={"path": "/c"}).status_code == 404


def test_sessions_are_private(new_user) -> None:
    alice, bob = new_user(), new_user()
    location = start(alice, "/mine", 10)
    stolen = bob.put(location, content=b"0123456789", headers={"Content-Range": "bytes 0-9/10"})
    assert stolen.status_code == 404
    assert bob.delete(location).status_code == 404
    assert progress(alice, location, total=10).status_code == 308


@pytest.mark.parametrize(
    ("length", "status", "code"),
    [(None, 400, "invalid_request"), ("-1", 400, "invalid_request"),
     ("abc", 400, "invalid_request"), (str(64 * 1024**3 + 1), 413, "too_large")],
)  # fmt: skip
def test_bad_announced_length(new_user, length: str | None, status: int, code: str) -> None:
    alice = new_user()
    headers = {} if length is None else {"X-Upload-Content-Length": length}
    params = {"uploadType": "resumable", "path": "/f"}
    response = alice.post("/v1/files", params=params, headers=headers)
    assert response.status_code == status and error_code(response) == code


def test_a_folder_in_the_way_is_refused_at_the_start(new_user) -> None:
    alice = new_user()
    alice.post("/v1/tree/mkdir", json={"path": "/d"})
    response = alice.post(
        "/v1/files",
        params={"uploadType": "resumable", "path": "/d"},
        headers={"X-Upload-Content-Length": "5"},
    )
    assert response.status_code == 409 and error_code(response) == "is_a_directory"
