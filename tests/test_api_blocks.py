"""The mount's write path over HTTP: missing blocks, block PUT/GET, commits and conflicts."""

import os

import httpx
import pytest
import zstandard

from backend.protocol.chunking import MAX_BLOCK_SIZE
from backend.protocol.hashing import block_hash

BLOCK = os.urandom(300_000)
HASH = block_hash(BLOCK)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def put_block(client: httpx.Client, data: bytes, name: str | None = None) -> httpx.Response:
    return client.put(
        f"/v1/blocks/{name or block_hash(data)}",
        content=zstd(data),
        headers={"Content-Type": "application/zstd"},
    )


def commit(client: httpx.Client, path: str, blocks: list[bytes], **fields) -> httpx.Response:
    body = {
        "path": path,
        "size": sum(len(b) for b in blocks),
        "blocks": [{"hash": block_hash(b), "size": len(b)} for b in blocks],
        **fields,
    }
    return client.post("/v1/files/commit", json=body)


def content(client: httpx.Client, path: str) -> bytes:
    response = client.get("/v1/files/content", params={"path": path})
    assert response.status_code == 200, response.text
    return response.content


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_block_round_trip_and_idempotence(new_user) -> None:
    alice = new_user()
    assert alice.post("/v1/blocks/missing", json={"hashes": [HASH]}).json() == {"missing": [HASH]}
    stored = put_block(alice, BLOCK)
    assert stored.status_code == 201 and stored.json() == {"hash": HASH, "size": len(BLOCK)}
    assert put_block(alice, BLOCK).status_code == 201
    assert alice.post("/v1/blocks/missing", json={"hashes": [HASH]}).json() == {"missing": []}
    fetched = alice.get(f"/v1/blocks/{HASH}")
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "application/zstd"
    assert zstandard.ZstdDecompressor().decompress(fetched.content) == BLOCK


def test_blocks_and_knowledge_stay_per_user(new_user) -> None:
    alice, bob = new_user(), new_user()
    secret = os.urandom(200_000)
    assert put_block(alice, secret).status_code == 201
    assert commit(alice, "/secret", [secret]).json()["status"] == "uploaded"
    name = block_hash(secret)
    # Bob learns nothing: the block is "missing" for him, and he cannot read it.
    assert bob.post("/v1/blocks/missing", json={"hashes": [name]}).json() == {"missing": [name]}
    assert bob.get(f"/v1/blocks/{name}").status_code == 404
    assert bob.get("/v1/files/content", params={"path": "/secret"}).status_code == 404
    node_id = alice.get("/v1/tree/stat", params={"path": "/secret"}).json()["id"]
    assert bob.get("/v1/files/content", params={"id": node_id}).status_code == 404
    # A commit naming someone else's block stays pending until he sends the bytes himself.
    theirs = commit(bob, "/copy", [secret]).json()
    assert theirs["status"] == "pending" and theirs["missing"] == [name]
    assert content(bob, "/copy") == b""  # no uploaded revision yet: reads as empty
    pending = bob.get("/v1/files/content", params={"path": "/copy", "rev": 1})
    assert pending.status_code == 409 and error_code(pending) == "revision_pending"
    assert put_block(bob, secret).status_code == 201
    assert content(bob, "/copy") == secret


def test_commit_flow_pending_then_uploaded(new_user) -> None:
    alice = new_user()
    parts = [os.urandom(150_000), os.urandom(10)]
    answer = commit(alice, "/docs/new.bin", parts, mtime_ns=5 * 10**18, mode=0o640)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "pending" and body["conflict"] is False and body["rev"] == 1
    assert sorted(body["missing"]) == sorted(block_hash(p) for p in parts)
    assert body["node"]["status"] == "pending" and body["path"] == "/docs/new.bin"
    for part in parts:
        assert put_block(alice, part).status_code == 201
    node = alice.get("/v1/tree/stat", params={"path": "/docs/new.bin"}).json()
    assert node["status"] == "uploaded" and node["rev"] == 1 and node["mode"] == 0o640
    assert content(alice, "/docs/new.bin") == b"".join(parts)


def test_commit_id_makes_a_commit_idempotent(new_user) -> None:
    alice = new_user()
    put_block(alice, BLOCK)
    first = commit(alice, "/once", [BLOCK], commit_id="c0ffee").json()
    again = commit(alice, "/once", [BLOCK], commit_id="c0ffee").json()
    assert first["rev"] == again["rev"] == 1
    history = alice.get("/v1/files/history", params={"path": "/once"}).json()["revisions"]
    assert len(history) == 1


def test_conflicting_commits_keep_both_versions(new_user) -> None:
    alice = new_user(device="laptop")
    ours, theirs = os.urandom(1000), os.urandom(2000)
    put_block(alice, ours)
    put_block(alice, theirs)
    base = commit(alice, "/report.txt", [ours]).json()
    assert commit(alice, "/report.txt", [theirs], base_rev=base["rev"]).status_code == 201
    stale = commit(alice, "/report.txt", [ours], base_rev=base["rev"]).json()
    assert stale["conflict"] is True
    assert stale["path"].startswith("/report (laptop's conflicted copy ")
    assert stale["path"].endswith(").txt")
    assert content(alice, "/report.txt") == theirs
    assert content(alice, stale["path"]) == ours
    fresh = commit(alice, "/report.txt", [ours]).json()  # base_rev null but the file exists
    assert fresh["conflict"] is True and fresh["path"] != stale["path"]


def test_wrong_hash_is_refused_and_stores_nothing(new_user) -> None:
    alice = new_user()
    wrong = block_hash(b"something else")
    response = put_block(alice, BLOCK, name=wrong)
    assert response.status_code == 422 and error_code(response) == "hash_mismatch"
    assert alice.post("/v1/blocks/missing", json={"hashes": [wrong]}).json()["missing"] == [wrong]


def test_oversized_block_is_413(new_user) -> None:
    alice = new_user()
    big = b"\0" * (MAX_BLOCK_SIZE + 1)  # compresses to a tiny frame: the limit is on the block
    response = put_block(alice, big)
    assert response.status_code == 413 and error_code(response) == "too_large"
    frame = os.urandom(MAX_BLOCK_SIZE + 200_000)  # the frame itself over the cap
    response = alice.put(f"/v1/blocks/{block_hash(frame)}", content=frame)
    assert response.status_code == 413 and error_code(response) == "too_large"

    def chunks():  # no Content-Length: the cap must hold while streaming
        for _ in range(6):
            yield os.urandom(1024 * 1024)

    response = alice.put(f"/v1/blocks/{HASH}", content=chunks())
    assert response.status_code == 413 and error_code(response) == "too_large"


@pytest.mark.parametrize("body", [b"", b"not a zstd frame", zstd(BLOCK)[:-10]])
def test_malformed_frames_are_400(new_user, body: bytes) -> None:
    alice = new_user()
    response = alice.put(f"/v1/blocks/{HASH}", content=body)
    assert response.status_code == 400 and error_code(response) == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [
        {"path": "/f", "size": 5, "blocks": [{"hash": HASH, "size": 4}]},  # sizes disagree
        {"path": "/f", "size": 1, "blocks": [{"hash": "ABC", "size": 1}]},
        {"path": "/f", "size": -1, "blocks": []},
        {"path": "/f", "size": 0, "blocks": [], "mode": 0o70000},
        {"path": "/f", "size": 0, "blocks": [], "commit_id": "x" * 65},
        {"path": "/f", "size": 0, "blocks": [], "mtime_ns": 2**64},
        {"path": "/f", "size": 0},
        {"size": 0, "blocks": []},
    ],
)
def test_bad_commits_are_400_and_change_nothing(new_user, body: dict) -> None:
    alice = new_user()
    response = alice.post("/v1/files/commit", json=body)
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert alice.get("/v1/tree/list", params={"path": "/"}).json()["entries"] == []


def test_missing_query_limits(new_user) -> None:
    alice = new_user()
    too_many = {"hashes": [HASH] * 10_001}
    assert alice.post("/v1/blocks/missing", json=too_many).status_code == 400
    bad = alice.post("/v1/blocks/missing", json={"hashes": ["xyz"]})
    assert bad.status_code == 400 and error_code(bad) == "invalid_request"
    assert alice.get("/v1/blocks/not-a-hash").status_code == 400
