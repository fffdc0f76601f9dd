"""Helpers for lifecycle tests: a movable server clock, admin commands, the block directory.

The clock is moved through CIRRUS_CLOCK_OFFSET_FILE (backend/clock.py), set in the
environment that server processes and admin commands inherit.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard

from backend.clock import OFFSET_FILE_VARIABLE
from backend.protocol.hashing import block_hash
from tests.support.server import COMMAND_TIMEOUT_S, ServerProcess, cirrus_executable

HOUR = 3600.0
DAY = 24 * HOUR


class Clock:
    """Seconds added to the wall clock of every server and admin command started after."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0
        path.write_text("0")

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.path.write_text(repr(self.offset))


def movable_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(tmp_path / "clock-offset")
    monkeypatch.setenv(OFFSET_FILE_VARIABLE, str(clock.path))
    return clock


@pytest.fixture
def clocked_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ServerProcess, Clock]]:
    """A server that never collects on its own, and the clock it (and admin commands) read."""
    clock = movable_clock(tmp_path, monkeypatch)
    server = ServerProcess(tmp_path / "server", extra_args=("--gc-interval", "0"))
    try:
        server.start()
        yield server, clock
    finally:
        server.stop()
    assert server.errors_logged() == [], server.log_tail(80)


def admin(server: ServerProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `cirrus admin ARGS` on the server's data (and database, and block store); fail
    unless it succeeds."""
    command = [cirrus_executable(), "admin", *args, "--data", str(server.data_dir)]
    if server.db_url is not None:
        command += ["--db", server.db_url]
    if "--blocks" in server.extra_args and "--blocks" not in args:
        at = server.extra_args.index("--blocks")
        command += list(server.extra_args[at : at + 2])
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def collected(result: subprocess.CompletedProcess) -> int:
    """The number of blocks an `admin gc` run reports collected."""
    line = next(line for line in result.stdout.splitlines() if "collect" in line)
    return int(line.split()[1] if line.startswith("collected") else line.split()[2])


def stored_objects(server: ServerProcess) -> set[str]:
    """The names of the objects in the server's block directory."""
    root = server.data_dir / "blocks"
    return {p.name for p in root.glob("*/*/*") if p.is_file() and not p.name.startswith(".")}


def put_block(client: httpx.Client, data: bytes) -> None:
    response = client.put(
        f"/v1/blocks/{block_hash(data)}",
        content=zstandard.ZstdCompressor().compress(data),
        headers={"Content-Type": "application/zstd"},
    )
    assert response.status_code == 201, response.text


def missing(client: httpx.Client, blocks: list[bytes]) -> list[str]:
    response = client.post("/v1/blocks/missing", json={"hashes": [block_hash(b) for b in blocks]})
    assert response.status_code == 200, response.text
    return response.json()["missing"]


def commit(client: httpx.Client, path: str, blocks: list[bytes], base_rev: int | None = None):
    body = {
        "path": path,
        "base_rev": base_rev,
        "size": sum(len(b) for b in blocks),
        "blocks": [{"hash": block_hash(b), "size": len(b)} for b in blocks],
    }
    response = client.post("/v1/files/commit", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def upload(client: httpx.Client, path: str, data: bytes) -> dict:
    response = client.post("/v1/files", params={"path": path, "uploadType": "media"}, content=data)
    assert response.status_code == 201, response.text
    return response.json()


def content(client: httpx.Client, path: str, rev: int | None = None) -> bytes:
    params = {"path": path} if rev is None else {"path": path, "rev": rev}
    response = client.get("/v1/files/content", params=params)
    assert response.status_code == 200, response.text
    return response.content


def delete(client: httpx.Client, path: str) -> None:
    response = client.post("/v1/tree/delete", json={"path": path})
    assert response.status_code == 200, response.text


def history(client: httpx.Client, path: str, limit: int | None = None) -> dict:
    params = {"path": path} if limit is None else {"path": path, "limit": limit}
    response = client.get("/v1/files/history", params=params)
    assert response.status_code == 200, response.text
    return response.json()
