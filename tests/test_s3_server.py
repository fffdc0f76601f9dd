"""The server with its blocks in S3 (moto's real HTTP server): start-up checks, encryption at
rest in the bucket, and a corrupted object that is refused rather than served."""

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import zstandard

from backend.blockstore.registry import open_store
from backend.protocol.hashing import block_hash
from tests.support.s3 import MotoServer, s3_credentials
from tests.support.server import ServerProcess, cirrus_executable, free_port

TIMEOUT_S = 60


def serve_once(tmp_path: Path, blocks: str) -> subprocess.CompletedProcess:
    """`cirrus serve` expected to refuse to start."""
    return subprocess.run(
        [cirrus_executable(), "serve", "--data", str(tmp_path / "data"), "--port", "0",
         "--blocks", blocks],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("cirrus serve: error: ")
    for word in words:
        assert word in lines[0], lines[0]


def test_a_missing_bucket_stops_the_start_in_one_line(tmp_path: Path, moto: MotoServer) -> None:
    result = serve_once(tmp_path, moto.store_url("no-such-bucket"))
    assert_one_line_error(result, "'no-such-bucket' does not exist")


def test_refused_credentials_stop_the_start_in_one_line(tmp_path: Path) -> None:
    # INITIAL_NO_AUTH_ACTION_COUNT=0 makes moto check every request's access key.
    with (
        s3_credentials(),
        MotoServer(tmp_path / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as s3,
    ):
        result = serve_once(tmp_path, s3.store_url("blocks"))
    assert_one_line_error(result, "credentials were refused")


def test_an_endpoint_that_does_not_answer_stops_the_start_quickly(tmp_path: Path) -> None:
    with s3_credentials():
        result = serve_once(tmp_path, f"s3://blocks/p?endpoint=http://127.0.0.1:{free_port()}")
    assert_one_line_error(result, "Could not connect")


def test_missing_credentials_stop_the_start_in_one_line(tmp_path: Path, moto: MotoServer) -> None:
    with s3_credentials(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY=""):
        result = serve_once(tmp_path, moto.store_url("blocks"))
    assert_one_line_error(result, "no AWS credentials")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("s3://key:secret@bucket/p", "never the URL"),
        ("s3:///p", "must be s3://BUCKET"),
        ("s3://bucket/p?colour=red", "options are"),
        ("s3://bucket/p?endpoint=ftp://x", "http:// or https://"),
        ("s3://bucket/p?storage_class=COLD", "storage class"),
    ],
)
def test_bad_s3_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        open_store(url)


def test_blocks_rest_encrypted_in_the_bucket_and_corruption_is_refused(
    tmp_path: Path, moto: MotoServer, s3_bucket: str
) -> None:
    with ServerProcess(
        tmp_path / "server", extra_args=("--blocks", moto.store_url(s3_bucket))
    ) as server:
        client = server.client(server.create_user("alice"))
        plain = b"a line of perfectly readable text\n" * 2000
        name = block_hash(plain)
        frame = zstandard.ZstdCompressor().compress(plain)
        stored = client.put(f"/v1/blocks/{name}", content=frame)
        assert stored.status_code == 201, stored.text
        objects = moto.objects(s3_bucket)
        assert list(objects) == [f"blocks/{name}"]
        assert b"readable" not in objects[f"blocks/{name}"]  # ciphertext at rest
        assert (
            zstandard.ZstdDecompressor().decompress(client.get(f"/v1/blocks/{name}").content)
            == plain
        )

        damaged = bytearray(objects[f"blocks/{name}"])
        damaged[40] ^= 0x01
        moto.client().put_object(Bucket=s3_bucket, Key=f"blocks/{name}", Body=bytes(damaged))
        answer = client.get(f"/v1/blocks/{name}")
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "hash_mismatch"
        client.close()


def test_a_store_that_stops_answering_is_a_503_not_a_crash(tmp_path: Path) -> None:
    with s3_credentials(), MotoServer(tmp_path / "moto.log") as s3:
        s3.create_bucket("blocks")
        args = ("--blocks", s3.store_url("blocks"))
        with ServerProcess(tmp_path / "server", extra_args=args) as server:
            client = server.client(server.create_user("alice"))
            plain = os.urandom(50_000)
            name = block_hash(plain)
            frame = zstandard.ZstdCompressor().compress(plain)
            assert client.put(f"/v1/blocks/{name}", content=frame).status_code == 201
            s3.kill()
            for answer in (
                client.put(f"/v1/blocks/{block_hash(b'x')}", content=zstandard.compress(b"x")),
                client.get(f"/v1/blocks/{name}"),
            ):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "storage_unavailable"
            client.close()
        assert server.errors_logged() == []


def test_an_endpoint_that_accepts_but_never_answers_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as silent, s3_credentials():
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections are queued by the kernel and never answered
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = serve_once(tmp_path, f"s3://blocks/p?endpoint=http://127.0.0.1:{port}")
    assert_one_line_error(result, "Read timeout")
    assert time.monotonic() - started < 30


def test_a_corrupted_object_in_s3_is_never_served_by_a_download(
    tmp_path: Path, moto: MotoServer, s3_bucket: str
) -> None:
    """Every block of a download is verified before its bytes are sent: a corrupted first
    block is a 422 before the answer starts, a corrupted later one cuts the body short of
    its Content-Length (the client sees the break), and no wrong byte is ever sent."""
    args = ("--blocks", moto.store_url(s3_bucket))
    with ServerProcess(tmp_path / "server", extra_args=args) as server:
        client = server.client(server.create_user("alice"))
        data = os.urandom(3 * 1024 * 1024)
        made = client.post("/v1/files", params={"path": "/big.bin", "uploadType": "media"},
                           content=data)  # fmt: skip
        assert made.status_code == 201, made.text
        blocks = client.get("/v1/files/blocks", params={"path": "/big.bin"}).json()["blocks"]
        assert len(blocks) >= 3
        first, last = blocks[0]["hash"], blocks[-1]["hash"]

        def damage(name: str) -> None:
            key = f"blocks/{name}"
            damaged = bytearray(moto.objects(s3_bucket)[key])
            damaged[len(damaged) // 2] ^= 0x01
            moto.client().put_object(Bucket=s3_bucket, Key=key, Body=bytes(damaged))

        damage(last)
        received = bytearray()
        with (
            pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|complete message"),
            client.stream("GET", "/v1/files/content", params={"path": "/big.bin"}) as answer,
        ):
            assert answer.status_code == 200
            for piece in answer.iter_bytes():
                received += piece
        assert len(received) <= blocks[-1]["offset"] and data.startswith(received)

        fetched = client.post("/v1/blocks/fetch", json={"hashes": [b["hash"] for b in blocks]})
        assert fetched.status_code == 422 and fetched.json()["error"]["code"] == "hash_mismatch"

        damage(first)
        answer = client.get("/v1/files/content", params={"path": "/big.bin"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "hash_mismatch"
        client.close()
    assert server.errors_logged() == []  # one line per refusal, no traceback
    assert "download of file" in server.log_tail(200) and "cut short" in server.log_tail(200)
