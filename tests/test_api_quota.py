"""Quotas over HTTP and the admin command: usage by the documented rule, 507 quota_exceeded
for uploads and commits past the quota, and space freed by purging the trash."""

import os
import subprocess

import httpx
import pytest

from tests.support.server import COMMAND_TIMEOUT_S, ServerProcess, cirrus_executable

KIB = 1024


def set_quota(server: ServerProcess, name: str, size: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [cirrus_executable(), "admin", "set-quota", name, size, "--data", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def upload(client: httpx.Client, path: str, data: bytes) -> httpx.Response:
    return client.post("/v1/files", params={"uploadType": "media", "path": path}, content=data)


def usage(client: httpx.Client) -> dict:
    return client.get("/v1/usage").raise_for_status().json()


def refused(response: httpx.Response) -> bool:
    return response.status_code == 507 and response.json()["error"]["code"] == "quota_exceeded"


@pytest.fixture
def alice(server: ServerProcess):
    with server.client(server.create_user("alice")) as client:
        yield client


def test_set_quota_command(server: ServerProcess, alice: httpx.Client) -> None:
    assert usage(alice)["quota"] is None
    done = set_quota(server, "alice", "1.5M")
    assert done.returncode == 0, done.stderr
    assert usage(alice)["quota"] == 1536 * KIB
    assert set_quota(server, "alice", "10GiB").returncode == 0
    assert usage(alice)["quota"] == 10 << 30
    assert set_quota(server, "alice", "none").returncode == 0
    answer = usage(alice)
    assert answer["quota"] is None and answer["free"] > 0
    assert answer["total"] == answer["used"] + answer["free"]
    for name, size in (("alice", "lots"), ("alice", "1.5.2G"), ("nobody", "1G")):
        failed = set_quota(server, name, size)
        assert failed.returncode == 1
        (line,) = failed.stderr.strip().splitlines()
        assert line.startswith("cirrus admin: error: ")


def test_usage_counts_each_block_once_per_user(server: ServerProcess, alice: httpx.Client) -> None:
    data = os.urandom(300 * KIB)
    upload(alice, "/one.bin", data).raise_for_status()
    upload(alice, "/copy.bin", data).raise_for_status()  # the same blocks: counted once
    assert usage(alice)["used"] == len(data)
    with server.client(server.create_user("bob")) as bob:
        upload(bob, "/theirs.bin", data).raise_for_status()  # shared storage, full count
        assert usage(bob)["used"] == len(data)
    alice.post("/v1/tree/delete", json={"path": "/one.bin"}).raise_for_status()
    alice.post("/v1/tree/delete", json={"path": "/copy.bin"}).raise_for_status()
    assert usage(alice)["used"] == len(data)  # the trash still holds them
    alice.post("/v1/trash/purge", json={"all": True}).raise_for_status()
    assert usage(alice)["used"] == 0


def test_uploads_and_commits_past_the_quota_get_507(
    server: ServerProcess, alice: httpx.Client
) -> None:
    assert set_quota(server, "alice", "500K").returncode == 0
    kept = os.urandom(400 * KIB)
    upload(alice, "/kept.bin", kept).raise_for_status()
    assert refused(upload(alice, "/big.bin", os.urandom(200 * KIB)))
    assert alice.get("/v1/tree/stat", params={"path": "/big.bin"}).status_code == 404
    start = alice.post(
        "/v1/files",
        params={"uploadType": "resumable", "path": "/r.bin"},
        headers={"X-Upload-Content-Length": str(200 * KIB)},
    )
    assert refused(start)
    block = "ab" * 32
    commit = {"path": "/c.bin", "size": 200 * KIB, "blocks": [{"hash": block, "size": 200 * KIB}]}
    assert refused(alice.post("/v1/files/commit", json=commit))
    batch = {"ops": [{"op": "commit", **commit}, {"op": "mkdir", "path": "/after"}]}
    results = alice.post("/v1/batch", json={**batch, "stop_on_error": True}).json()["results"]
    assert results[0]["status"] == 507 and results[0]["error"]["code"] == "quota_exceeded"
    assert len(results) == 1
    # Content the drive already has needs no space: a copy and a small file still fit.
    upload(alice, "/kept-again.bin", kept).raise_for_status()
    upload(alice, "/small.txt", b"x" * 1000).raise_for_status()
    assert usage(alice) == {"used": len(kept) + 1000, "quota": 500 * KIB,
                            "free": 500 * KIB - len(kept) - 1000, "total": 500 * KIB}  # fmt: skip
    for path in ("/kept.bin", "/kept-again.bin"):
        alice.post("/v1/tree/delete", json={"path": path}).raise_for_status()
    assert refused(upload(alice, "/big.bin", os.urandom(200 * KIB)))  # the trash counts
    alice.post("/v1/trash/purge", json={"all": True}).raise_for_status()
    upload(alice, "/big.bin", os.urandom(200 * KIB)).raise_for_status()
