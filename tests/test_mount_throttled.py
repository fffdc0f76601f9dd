"""A mount under the server's per-user request cap (`--requests-per-user`): the 429s it
meets are waited out request by request, so writers and readers see no error, the data
arrives whole, and the mount does not go offline. A client that waits for each answer
never meets the cap."""

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mount import MountProcess, wait_until
from tests.support.server import ServerProcess

MIB = 1 << 20


def _pending(drive: MountProcess) -> int:
    return json.loads((drive.path / ".cirrus" / "status.json").read_bytes())["pending_operations"]


def _refused(server: ServerProcess) -> int:
    """Requests the server answered 429 (its access log)."""
    return len(re.findall(r'" 429 ', server.log_path.read_text(errors="replace")))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that lets a user have one request in progress."""
    process = ServerProcess(tmp_path / "server", extra_args=("--requests-per-user", "1"))
    with process:
        yield process
    assert not process.errors_logged(), process.log_tail()


def test_one_request_at_a_time_never_meets_the_cap(server: ServerProcess) -> None:
    token = server.create_user("bob")
    with server.client(token) as client:  # one keep-alive connection, answers read in full
        upload = {"uploadType": "media", "path": "/one.bin"}
        assert client.post("/v1/files", params=upload, content=os.urandom(MIB)).status_code == 201
        for _ in range(30):
            answer = client.get("/v1/files/content", params={"path": "/one.bin"})
            assert answer.status_code == 200 and len(answer.content) == MIB
            assert client.get("/v1/account").status_code == 200
    assert _refused(server) == 0


def test_a_mount_waits_out_429s_with_no_error_to_writers_or_readers(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = server.create_user("alice")
    files = {
        "big.bin": os.urandom(40 * MIB),
        **{f"f{i}.bin": os.urandom(MIB) for i in range(4)},
    }
    writer = MountProcess(server.url, token, tmp_path / "mnt-a", tmp_path / "cache-a")
    reader = MountProcess(server.url, token, tmp_path / "mnt-b", tmp_path / "cache-b")
    with writer, reader:
        for name, data in files.items():
            with open(writer.path / name, "wb") as out:  # raises on any error
                out.write(data)
                os.fsync(out.fileno())
        wait_until(lambda: _pending(writer) == 0, timeout=60)
        wait_until(lambda: sorted(os.listdir(reader.path)) == sorted(files), timeout=30)
        for name, data in files.items():  # a cold cache: block fetches meet the cap too
            assert (reader.path / name).read_bytes() == data
        assert _refused(server) > 0  # the cap was met
    with server.client(token) as client:  # alone now: within the cap
        for name, data in files.items():
            answer = client.get("/v1/files/content", params={"path": f"/{name}"})
            assert answer.status_code == 200 and answer.content == data
    for drive in (writer, reader):
        log = drive.log_path.read_text(errors="replace")
        assert "working offline" not in log and not drive.errors_logged(), drive.log_tail()
