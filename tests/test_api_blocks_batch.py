"""Several blocks per request: POST /v1/blocks/batch (upload) and /v1/blocks/fetch (download)."""

import os

import httpx
import pytest
import zstandard

from backend.blocks import MAX_BATCH_BLOCKS, MAX_BATCH_BYTES, pack_batch, unpack_batch
from backend.protocol.hashing import block_hash

BATCH_TYPE = {"Content-Type": "application/x-cirrus-blocks"}


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def framed(blocks: list[bytes]) -> bytes:
    return pack_batch([(block_hash(data), zstd(data)) for data in blocks])


def put_batch(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/v1/blocks/batch", content=body, headers=BATCH_TYPE)


def missing(client: httpx.Client, blocks: list[bytes]) -> list[str]:
    hashes = [block_hash(data) for data in blocks]
    return client.post("/v1/blocks/missing", json={"hashes": hashes}).json()["missing"]


def fetch(client: httpx.Client, hashes: list[str]) -> httpx.Response:
    return client.post("/v1/blocks/fetch", json={"hashes": hashes})


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_batch_round_trip_in_order(new_user) -> None:
    alice = new_user()
    blocks = [os.urandom(100_000 + i) for i in range(5)] + [b"text " * 20_000]
    stored = put_batch(alice, framed(blocks))
    assert stored.status_code == 201, stored.text
    expected = [{"hash": block_hash(data), "size": len(data)} for data in blocks]
    assert stored.json() == {"blocks": expected}
    assert missing(alice, blocks) == []
    hashes = [block_hash(data) for data in reversed(blocks)]
    answer = fetch(alice, hashes)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/x-cirrus-blocks"
    frames = unpack_batch(answer.content)
    assert [name for name, _frame in frames] == hashes
    decompress = zstandard.ZstdDecompressor().decompress
    assert [decompress(frame) for _name, frame in frames] == list(reversed(blocks))


def test_one_lying_block_refuses_the_whole_batch(new_user) -> None:
    alice = new_user()
    good, bad = os.urandom(50_000), os.urandom(50_000)
    body = framed([good]) + pack_batch([(block_hash(b"another block"), zstd(bad))])
    response = put_batch(alice, body)
    assert response.status_code == 422 and error_code(response) == "hash_mismatch"
    assert missing(alice, [good]) == [block_hash(good)]  # nothing from that request recorded
    assert fetch(alice, [block_hash(good)]).status_code == 404


def test_batch_completes_a_pending_revision(new_user) -> None:
    alice = new_user()
    blocks = [os.urandom(70_000) for _ in range(3)]
    commit = {
        "path": "/f.bin",
        "size": sum(len(b) for b in blocks),
        "blocks": [{"hash": block_hash(b), "size": len(b)} for b in blocks],
    }
    answer = alice.post("/v1/files/commit", json=commit).json()
    assert answer["status"] == "pending" and len(answer["missing"]) == 3
    assert put_batch(alice, framed(blocks)).status_code == 201
    assert alice.get("/v1/tree/stat", params={"path": "/f.bin"}).json()["status"] == "uploaded"
    assert alice.get("/v1/files/content", params={"path": "/f.bin"}).content == b"".join(blocks)


def test_fetch_reveals_nothing_across_users(new_user) -> None:
    alice, bob = new_user(), new_user()
    secret, own = os.urandom(40_000), os.urandom(40_000)
    assert put_batch(alice, framed([secret])).status_code == 201
    assert put_batch(bob, framed([own])).status_code == 201
    unknown = block_hash(b"never stored by anyone")
    for hashes in ([block_hash(secret)], [block_hash(own), block_hash(secret)], [unknown]):
        response = fetch(bob, hashes)
        assert response.status_code == 404 and error_code(response) == "not_found"
    assert fetch(bob, [block_hash(own)]).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"z" * 64 + (10).to_bytes(8, "big") + b"0123456789",  # not a hash
        framed([b"cut short"])[:-3],
        framed([b"header cut"])[:40],
        pack_batch([(block_hash(b"x"), b"not zstd")]),
    ],
    ids=["empty", "not-a-hash", "truncated-frame", "truncated-header", "not-zstd"],
)
def test_malformed_batches_are_400_and_store_nothing(new_user, body: bytes) -> None:
    alice = new_user()
    first = b"a block before the bad one"
    response = put_batch(alice, framed([first]) + body if body else body)
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert missing(alice, [first]) == [block_hash(first)]


def test_batch_limits_are_413(new_user) -> None:
    alice = new_user()
    many = [os.urandom(16) for _ in range(MAX_BATCH_BLOCKS + 1)]
    response = put_batch(alice, framed(many))
    assert response.status_code == 413 and error_code(response) == "too_large"
    assert missing(alice, many[:1]) == [block_hash(many[0])]

    def stream():  # no Content-Length: the cap holds while the body arrives
        for _ in range(MAX_BATCH_BYTES // (1024 * 1024) + 1):
            yield os.urandom(1024 * 1024)

    response = alice.post("/v1/blocks/batch", content=stream(), headers=BATCH_TYPE)
    assert response.status_code == 413 and error_code(response) == "too_large"
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(5 * 1024 * 1024))
    response = put_batch(alice, pack_batch([(block_hash(b"small"), bomb)]))  # inflates > 4 MiB
    assert response.status_code == 413 and error_code(response) == "too_large"
    too_many = fetch(alice, [block_hash(data) for data in many])
    assert too_many.status_code == 413 and error_code(too_many) == "too_large"


@pytest.mark.parametrize("body", [{"hashes": []}, {"hashes": ["xyz"]}, {"nope": 1}])
def test_bad_fetch_requests_are_400(new_user, body: dict) -> None:
    response = new_user().post("/v1/blocks/fetch", json=body)
    assert response.status_code == 400 and error_code(response) == "invalid_request"
