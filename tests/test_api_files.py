"""Whole files over HTTP: simple upload, download (ranges, ETag), history and restore."""

import os

import httpx
import pytest

DATA = os.urandom(3 * 1024 * 1024 + 12345)  # several blocks, not block-aligned


def upload(client: httpx.Client, path: str, data: bytes, **params: object) -> dict:
    response = client.post(
        "/v1/files", params={"uploadType": "media", "path": path, **params}, content=data
    )
    assert response.status_code == 201, response.text
    return response.json()


def download(client: httpx.Client, path: str, **params: object) -> bytes:
    response = client.get("/v1/files/content", params={"path": path, **params})
    assert response.status_code == 200, response.text
    return response.content


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_health_needs_no_token(shared_server) -> None:
    with shared_server.client() as client:
        assert client.get("/v1/health").json()["status"] == "ok"


def test_account_reports_the_user_and_usage(new_user) -> None:
    alice = new_user()
    before = alice.get("/v1/account").json()
    upload(alice, "/a.bin", DATA)
    after = alice.get("/v1/account").json()
    assert after["user"] == before["user"] and after["user"].startswith("user-")
    assert after["cursor"] > before["cursor"]
    assert after["files"] == before["files"] + 1
    assert after["used_bytes"] >= before["used_bytes"] + len(DATA)


def test_simple_upload_round_trips_byte_for_byte(new_user) -> None:
    alice = new_user()
    node = upload(alice, "/docs/deep/a.bin", DATA, mode=0o600, mtime_ns=1_700_000_000 * 10**9)
    assert node["path"] == "/docs/deep/a.bin" and node["type"] == "file"
    assert (node["size"], node["rev"], node["status"]) == (len(DATA), 1, "uploaded")
    assert node["mode"] == 0o600 and node["mtime_ns"] == 1_700_000_000 * 10**9
    assert node["modified"] == "2023-11-14T22:13:20Z"
    assert download(alice, "/docs/deep/a.bin") == DATA
    assert download(alice, "/docs/deep/a.bin", rev=1) == DATA
    assert alice.get("/v1/files/content", params={"id": node["id"]}).content == DATA
    parent = alice.get("/v1/tree/stat", params={"path": "/docs/deep"}).json()
    assert parent["type"] == "dir"  # missing parents were created


def test_block_list_describes_the_file(new_user) -> None:
    alice = new_user()
    node = upload(alice, "/a.bin", DATA)
    listing = alice.get("/v1/files/blocks", params={"path": "/a.bin"}).json()
    assert (listing["id"], listing["rev"], listing["size"]) == (node["id"], 1, len(DATA))
    offsets = [block["offset"] for block in listing["blocks"]]
    sizes = [block["size"] for block in listing["blocks"]]
    assert len(offsets) >= 2 and offsets[0] == 0
    assert [a + s for a, s in zip(offsets, sizes, strict=False)][:-1] == offsets[1:]
    assert sum(sizes) == len(DATA)


def test_empty_file(new_user) -> None:
    alice = new_user()
    node = upload(alice, "/empty", b"")
    assert node["size"] == 0 and node["status"] == "uploaded"
    assert download(alice, "/empty") == b""


def test_reupload_makes_revisions_history_and_restore(new_user) -> None:
    alice = new_user(device="laptop")
    versions = [DATA, b"second version", b"third version" * 1000]
    for data in versions:
        upload(alice, "/r.txt", data)
    history = alice.get("/v1/files/history", params={"path": "/r.txt"}).json()
    assert history["path"] == "/r.txt"
    assert [r["rev"] for r in history["revisions"]] == [3, 2, 1]
    assert [r["size"] for r in history["revisions"]] == [len(v) for v in reversed(versions)]
    assert {r["device"] for r in history["revisions"]} == {"laptop"}
    limited = alice.get("/v1/files/history", params={"path": "/r.txt", "limit": 2}).json()
    assert [r["rev"] for r in limited["revisions"]] == [3, 2]
    for rev, data in enumerate(versions, start=1):
        assert download(alice, "/r.txt", rev=rev) == data

    restored = alice.post("/v1/files/restore", json={"path": "/r.txt", "rev": 1})
    assert restored.status_code == 201, restored.text
    assert restored.json()["rev"] == 4 and restored.json()["size"] == len(DATA)
    assert download(alice, "/r.txt") == DATA
    missing = alice.post("/v1/files/restore", json={"path": "/r.txt", "rev": 99})
    assert missing.status_code == 404 and error_code(missing) == "not_found"


def test_range_requests(new_user) -> None:
    alice = new_user()
    upload(alice, "/big", DATA)
    size = len(DATA)
    boundary = alice.get("/v1/files/blocks", params={"path": "/big"}).json()["blocks"][1]["offset"]
    cases = {
        "bytes=0-0": (0, 0),
        "bytes=10-19": (10, 19),
        f"bytes={boundary - 5}-{boundary + 5}": (boundary - 5, boundary + 5),
        f"bytes={size - 10}-": (size - 10, size - 1),
        "bytes=-7": (size - 7, size - 1),
        f"bytes=100-{size + 1000}": (100, size - 1),
    }
    for header, (first, last) in cases.items():
        response = alice.get(
            "/v1/files/content", params={"path": "/big"}, headers={"Range": header}
        )
        assert response.status_code == 206, header
        assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert response.content == DATA[first : last + 1], header


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=5-2", "bytes=abc", "bytes=-0"])
def test_unsatisfiable_ranges_are_416(new_user, header: str) -> None:
    alice = new_user()
    upload(alice, "/small", b"0123456789")
    response = alice.get("/v1/files/content", params={"path": "/small"}, headers={"Range": header})
    assert response.status_code == 416 and error_code(response) == "bad_range"
    assert response.headers["Content-Range"] == "bytes */10"


def test_multiple_ranges_get_the_whole_file(new_user) -> None:
    alice = new_user()
    upload(alice, "/small", b"0123456789")
    headers = {"Range": "bytes=0-1,4-5"}
    response = alice.get("/v1/files/content", params={"path": "/small"}, headers=headers)
    assert response.status_code == 200 and response.content == b"0123456789"


def test_etag_and_if_none_match(new_user) -> None:
    alice = new_user()
    node = upload(alice, "/e.txt", b"one")
    first = alice.get("/v1/files/content", params={"path": "/e.txt"})
    etag = first.headers["ETag"]
    assert etag == f'"{node["id"]}.1"' and first.headers["Accept-Ranges"] == "bytes"
    cached = alice.get(
        "/v1/files/content", params={"path": "/e.txt"}, headers={"If-None-Match": etag}
    )
    assert cached.status_code == 304 and cached.content == b""
    upload(alice, "/e.txt", b"two")
    fresh = alice.get(
        "/v1/files/content", params={"path": "/e.txt"}, headers={"If-None-Match": etag}
    )
    assert fresh.status_code == 200 and fresh.content == b"two"
    assert fresh.headers["ETag"] == f'"{node["id"]}.2"'


def test_folders_and_missing_files(new_user) -> None:
    alice = new_user()
    assert alice.post("/v1/tree/mkdir", json={"path": "/dir"}).status_code == 201
    in_the_way = alice.post(
        "/v1/files", params={"uploadType": "media", "path": "/dir"}, content=b"x"
    )
    assert in_the_way.status_code == 409 and error_code(in_the_way) == "is_a_directory"
    folder = alice.get("/v1/files/content", params={"path": "/dir"})
    assert folder.status_code == 409 and error_code(folder) == "is_a_directory"
    missing = alice.get("/v1/files/content", params={"path": "/nope"})
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    both = alice.get("/v1/files/content", params={"path": "/dir", "id": 1})
    assert both.status_code == 400 and error_code(both) == "invalid_request"
    assert alice.get("/v1/tree/list", params={"path": "/"}).json()["entries"][0]["name"] == "dir"


def test_identical_files_share_blocks(new_user) -> None:
    alice, bob = new_user(), new_user()
    upload(alice, "/a", DATA)
    upload(bob, "/b", DATA)
    upload(alice, "/copy", DATA)
    lists = [
        client.get("/v1/files/blocks", params={"path": path}).json()["blocks"]
        for client, path in ((alice, "/a"), (bob, "/b"), (alice, "/copy"))
    ]
    assert lists[0] == lists[1] == lists[2]
    assert download(bob, "/b") == DATA
