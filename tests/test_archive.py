"""The archive tier: blocks the policy picks move to the archive store crash-safely and stay
readable through the API and a mount; in a class that needs a restore (GLACIER on moto) the
API answers 503 with Retry-After and the mount waits instead of failing."""

import os
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.protocol.chunking import MAX_CHUNK
from tests.support.lifecycle import admin, collected
from tests.support.mount import MountProcess, wait_until
from tests.support.s3 import MotoServer
from tests.support.server import ServerProcess, cirrus_executable

KIB = 1024
MIB = 1024 * KIB
FAST = ("--archive-interval", "0.2", "--replication-interval", "0.2")


def files_under(root: Path) -> set[str]:
    """The block files below root; a folder the server removes meanwhile is skipped (os.walk
    passes over what vanishes under it, where Path.rglob raises)."""
    return {name for _, _, names in os.walk(root) for name in names if not name.startswith(".")}


def upload(client: httpx.Client, path: str, data: bytes) -> None:
    answer = client.post("/v1/files", params={"path": path, "uploadType": "media"}, content=data)
    assert answer.status_code == 201, answer.text


def content(client: httpx.Client, path: str, **params: object) -> httpx.Response:
    return client.get("/v1/files/content", params={"path": path, **params})


def block_hashes(client: httpx.Client, path: str, **params: object) -> list[str]:
    answer = client.get("/v1/files/blocks", params={"path": path, **params})
    assert answer.status_code == 200, answer.text
    return [block["hash"] for block in answer.json()["blocks"]]


def tiers(server: ServerProcess, *store_args: str) -> str:
    result = subprocess.run(
        [cirrus_executable(), "admin", "tiers", "--data", str(server.data_dir), *store_args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def started() -> Iterator[list[ServerProcess]]:
    """Servers a test starts; always stopped, and none may have logged a traceback."""
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.stop()
    for server in servers:
        assert server.errors_logged() == [], server.log_tail()


def start(started: list[ServerProcess], data: Path, *args: str) -> ServerProcess:
    started.append(ServerProcess(data, extra_args=args))
    return started[-1].start()


def test_old_revisions_move_to_the_archive_and_read_back(
    tmp_path: Path, started: list[ServerProcess]
) -> None:
    archive = tmp_path / "archive"
    server = start(
        started, tmp_path / "server", "--archive", f"file://{archive}", "--archive-old-revisions",
        *FAST,
    )  # fmt: skip
    token = server.create_user("alice")
    first, second = os.urandom(300 * KIB), os.urandom(200 * KIB)
    with server.client(token) as client:
        upload(client, "/report.bin", first)
        old = set(block_hashes(client, "/report.bin"))
        upload(client, "/report.bin", second)
        wait_until(lambda: old <= files_under(archive), timeout=30)
        hot = server.data_dir / "blocks"
        wait_until(lambda: not old & files_under(hot), timeout=30)  # hot copies retired
        assert not set(block_hashes(client, "/report.bin")) & files_under(archive)
        assert content(client, "/report.bin", rev=1).content == first
        report = tiers(server, "--archive", f"file://{archive}")
        assert "archive" in report and f"file://{archive}" in report

        restored = client.post("/v1/files/restore", json={"path": "/report.bin", "rev": 1})
        assert restored.status_code == 201, restored.text
    drive = MountProcess(server.url, token, tmp_path / "mnt", tmp_path / "cache")
    try:
        drive.mount()
        assert (drive.path / "report.bin").read_bytes() == first  # from the archive
    finally:
        drive.unmount()


def test_a_glacier_archive_answers_503_then_the_mount_waits(
    tmp_path: Path, started: list[ServerProcess], moto: MotoServer, s3_bucket: str
) -> None:
    archive = moto.store_url(s3_bucket, "cold", storage_class="GLACIER")
    server = start(
        started, tmp_path / "server", "--archive", archive, "--archive-after-days", "0", *FAST
    )
    token = server.create_user("alice")
    # one is longer than the largest block; two spans more blocks than the mount reads ahead.
    one, two = os.urandom(MAX_CHUNK + 150 * KIB), os.urandom(32 * MIB)
    with server.client(token) as client:
        upload(client, "/one.bin", one)
        upload(client, "/two.bin", two)
        of_one = block_hashes(client, "/one.bin")
        first, hashes = of_one[0], {*of_one, *block_hashes(client, "/two.bin")}
        keys = {f"cold/{h}" for h in hashes}
        wait_until(lambda: keys <= moto.keys(s3_bucket), timeout=30)
        wait_until(lambda: not hashes & files_under(server.data_dir / "blocks"), timeout=30)
        head = moto.client().head_object(Bucket=s3_bucket, Key=f"cold/{first}")
        assert head["StorageClass"] == "GLACIER"

        for answer in (client.get(f"/v1/blocks/{first}"), content(client, "/one.bin")):
            assert answer.status_code == 503  # the block, then the file's other blocks
            assert answer.json()["error"]["code"] == "restoring"
            assert int(answer.headers["Retry-After"]) > 0
        assert content(client, "/one.bin").content == one  # all restored (moto: at once)
        prepared = client.post("/v1/files/prepare", params={"path": "/one.bin"})
        assert prepared.status_code == 200, prepared.text
        assert prepared.json()["archived"] == len(set(of_one))

    drive = MountProcess(server.url, token, tmp_path / "mnt", tmp_path / "cache")
    try:
        drive.mount()
        assert (drive.path / "two.bin").read_bytes() == two  # waited for the restore
        log = drive.log_path.read_text()
        assert "being restored" in log and "asking the server to restore all of it" in log
    finally:
        drive.unmount()
    # The first 503 made the mount ask for the whole file: the blocks read ahead later were
    # restored already (only the requests then in flight were refused; 7 or more before).
    mounted = server.log_path.read_text().split("/v1/files/prepare?path=%2Fone.bin", 1)[1]
    refused = re.findall(r'"(?:GET /v1/blocks/\w+|POST /v1/blocks/fetch) HTTP/1.1" 503', mounted)
    assert 1 <= len(refused) <= 3


def test_kill_9_in_the_middle_of_moves_loses_nothing(
    tmp_path: Path, started: list[ServerProcess]
) -> None:
    archive = tmp_path / "archive"
    data = tmp_path / "server"
    server = start(started, data)
    token = server.create_user("alice")
    files = {f"/f{i}.bin": os.urandom(random.randint(130, 600) * KIB) for i in range(40)}
    with server.client(token) as client:
        for path, body in files.items():
            upload(client, path, body)
    server.stop()

    archiving = ("--archive", f"file://{archive}", "--archive-after-days", "0", *FAST)
    server = start(started, data, *archiving)
    wait_until(lambda: files_under(archive), timeout=30, step=0.01)
    server.kill()  # somewhere in a move: copied, recorded, or deleting hot copies
    hot = files_under(data / "blocks")
    assert hot, "every move had finished before the kill"

    server = start(started, data, *archiving)
    wait_until(lambda: not files_under(data / "blocks"), timeout=60)
    with server.client(token) as client:
        for path, body in files.items():
            assert content(client, path).content == body


def test_admin_gc_collects_archived_blocks_in_the_archive(
    tmp_path: Path, started: list[ServerProcess], moto: MotoServer, s3_bucket: str
) -> None:
    """`cirrus admin gc` opens the server's archive like the server's own collection: an
    archived block no revision needs any more is deleted there too, and without the
    archive it refuses in one line instead of leaving the archive's objects behind."""
    archive = moto.store_url(s3_bucket, "cold")
    server = start(
        started, tmp_path / "server", "--archive", archive, "--archive-old-revisions", *FAST
    )
    token = server.create_user("alice")
    with server.client(token) as client:
        upload(client, "/report.bin", os.urandom(300 * KIB))
        old = set(block_hashes(client, "/report.bin"))
        upload(client, "/report.bin", os.urandom(200 * KIB))
    keys = {f"cold/{h}" for h in old}
    wait_until(lambda: keys <= moto.keys(s3_bucket), timeout=30)
    wait_until(lambda: not old & files_under(server.data_dir / "blocks"), timeout=30)
    server.stop()

    prune = ("--prune", "--max-history", "0", "--grace", "0")
    refused = admin(server, "gc", *prune, check=False)
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "--archive" in refused.stderr, refused.stderr
    assert keys <= moto.keys(s3_bucket)

    result = admin(server, "gc", *prune, "--archive", archive)
    assert collected(result) == len(old), result.stdout
    assert not keys & moto.keys(s3_bucket)
    assert "still queued" not in result.stdout
