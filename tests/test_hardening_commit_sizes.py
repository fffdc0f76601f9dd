"""A commit cannot misstate its blocks' sizes: the server checks them against the blocks it
holds (422 block_size_mismatch, nothing recorded), and a revision that announced a size
wrongly before its block arrived is never shown."""

import os

import httpx

from backend.protocol.hashing import block_hash
from tests.test_api_blocks import put_block

DATA = b"eleven byte"


def _lying_commit(path: str, hash: str) -> dict:
    return {"path": path, "size": 1000, "blocks": [{"hash": hash, "size": 1000}]}


def test_a_commit_with_a_false_block_size_is_refused(new_user) -> None:
    client: httpx.Client = new_user()
    assert put_block(client, DATA).status_code == 201
    hash = block_hash(DATA)
    answer = client.post("/v1/files/commit", json=_lying_commit("/w", hash))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "block_size_mismatch"
    assert client.get("/v1/tree/stat", params={"path": "/w"}).status_code == 404
    account = client.get("/v1/account").json()
    assert account["used_bytes"] == 0 and account["files"] == 0
    batch = client.post("/v1/batch", json={"ops": [{"op": "commit", **_lying_commit("/b", hash)}]})
    assert batch.status_code == 200
    assert batch.json()["results"][0]["error"]["code"] == "block_size_mismatch"
    assert client.get("/v1/tree/stat", params={"path": "/b"}).status_code == 404
    # the true size commits, and the download matches its Content-Length
    honest = {"path": "/w", "size": 11, "blocks": [{"hash": hash, "size": 11}]}
    assert client.post("/v1/files/commit", json=honest).status_code == 201
    download = client.get("/v1/files/content", params={"path": "/w"})
    assert download.status_code == 200 and download.content == DATA
    assert download.headers["content-length"] == "11"


def test_a_pending_revision_with_a_false_size_is_never_shown(new_user) -> None:
    client: httpx.Client = new_user()
    data = os.urandom(11)
    answer = client.post("/v1/files/commit", json=_lying_commit("/p", block_hash(data)))
    assert answer.status_code == 201 and answer.json()["status"] == "pending"
    assert put_block(client, data).status_code == 201
    download = client.get("/v1/files/content", params={"path": "/p"})
    assert download.status_code == 200 and download.content == b""  # no uploaded revision
    download = client.get("/v1/files/content", params={"path": "/p", "rev": 1})
    assert download.status_code == 409, download.text
    assert download.json()["error"]["code"] == "revision_pending"
    assert client.get("/v1/account").json()["used_bytes"] == 0
