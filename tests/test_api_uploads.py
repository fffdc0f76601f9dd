"""Resumable uploads (Google Drive's protocol), including a server crash in the middle."""

import os

import httpx
import pytest

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


def test_spool_tail_beyond_the_acknowledged_offset_is_dropped(server) -> None:
    """Bytes written but never acknowledged (a crash before the offset moved) are discarded."""
    token = server.create_user("alice")
    with server.client(token) as alice:
        location = start(alice, "/tail.bin", len(DATA))
        assert put(alice, location, 0, PART - 1).status_code == 308
        upload_id = location.rsplit("/", 1)[1]
        server.kill()
        with open(server.data_dir / "uploads" / upload_id, "ab") as spool:
            spool.write(b"garbage that was never acknowledged")
        server.start()
        assert progress(alice, location).headers["Range"] == f"bytes=0-{PART - 1}"
        assert put(alice, location, PART, len(DATA) - 1).status_code == 201
        assert download(alice, "/tail.bin") == DATA


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
