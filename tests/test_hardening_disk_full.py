"""A full disk (a real one: the server's data on a small tmpfs) answers 507
insufficient_storage, never 500; a resumable PUT that fails for want of space acknowledges
and charges the user for nothing and leaves its session resumable; once space is freed the
same session completes."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.protocol.chunking import iter_chunks
from backend.protocol.hashing import block_hash
from tests.support.server import ServerProcess

FS_BYTES = 24 * 1024 * 1024
FILE_BYTES = 8 * 1024 * 1024
FILLER_BYTES = 18 * 1024 * 1024

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0700", "tmpfs", str(mountpoint)],
        check=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(path: Path, limit: int) -> None:
    """Write random data until the disk is full or limit bytes are written."""
    piece = os.urandom(1024 * 1024)
    with open(path, "wb") as file:
        try:
            for _ in range(limit // len(piece)):
                file.write(piece)
                file.flush()
        except OSError:
            pass


def _code(answer: httpx.Response) -> str:
    return answer.json()["error"]["code"]


def test_a_full_disk_is_507_and_the_upload_resumes_after(small_disk: Path) -> None:
    server = ServerProcess(small_disk / "data")
    server.start()
    try:
        with server.client(server.create_user("alice")) as client:
            _run(server, client, small_disk)
    finally:
        server.stop()
    assert not server.errors_logged(), server.log_tail(80)


def _run(server: ServerProcess, client: httpx.Client, disk: Path) -> None:
    data = os.urandom(FILE_BYTES)  # incompressible: the store needs as much again
    started = client.post(
        "/v1/files",
        params={"uploadType": "resumable", "path": "/big"},
        headers={"X-Upload-Content-Length": str(FILE_BYTES)},
    )
    location = started.headers["location"]
    _fill(disk / "filler", FILLER_BYTES)  # leaves no room for the blocks
    final = client.put(
        location, content=data, headers={"Content-Range": f"bytes 0-{FILE_BYTES - 1}/{FILE_BYTES}"}
    )
    assert final.status_code == 507, final.text
    assert _code(final) == "insufficient_storage"
    # the session still answers: nothing was acknowledged, nor charged to the user
    status = client.put(location, headers={"Content-Range": f"bytes */{FILE_BYTES}"})
    assert status.status_code == 308 and "Range" not in status.headers
    assert client.get("/v1/account").json()["bytes_received"] == 0
    hashes = [block_hash(c.data) for c in iter_chunks(data)]
    missing = client.post("/v1/blocks/missing", json={"hashes": hashes}).json()["missing"]
    assert sorted(missing) == sorted(set(hashes))
    # with the disk wholly full, a simple upload and a namespace change are refused the same way
    _fill(disk / "rest", FS_BYTES)
    simple = client.post(
        "/v1/files", params={"uploadType": "media", "path": "/s"}, content=os.urandom(65536)
    )
    assert simple.status_code == 507 and _code(simple) == "insufficient_storage"
    # space comes back: the same session completes, and the file is whole
    (disk / "filler").unlink()
    (disk / "rest").unlink()
    done = client.put(
        location, content=data, headers={"Content-Range": f"bytes 0-{FILE_BYTES - 1}/{FILE_BYTES}"}
    )
    assert done.status_code == 201, done.text
    assert client.get("/v1/files/content", params={"path": "/big"}).content == data
