"""Journal compaction over HTTP: entries every device has read are trimmed, nothing a known
device still needs is, and a cursor from before the trim gets 410 cursor_expired."""

import time
from pathlib import Path

import httpx
import pytest

from tests.support.mount import wait_until
from tests.support.server import ServerProcess


@pytest.fixture
def compacting_server(tmp_path: Path):
    server = ServerProcess(tmp_path / "server", extra_args=("--journal-interval", "0.2"))
    with server:
        yield server
    assert server.errors_logged() == []


def changes(client: httpx.Client, cursor: int) -> httpx.Response:
    return client.get("/v1/changes", params={"cursor": cursor})


def test_entries_read_by_every_device_are_trimmed(compacting_server: ServerProcess) -> None:
    token = compacting_server.create_user("alice")
    laptop = compacting_server.client(token, device="laptop")
    phone = compacting_server.client(token, device="phone")
    try:
        for name in ("a", "b", "c"):
            laptop.post("/v1/tree/mkdir", json={"path": f"/{name}"}).raise_for_status()
        assert len(changes(phone, 0).raise_for_status().json()["entries"]) == 3
        assert changes(laptop, 3).raise_for_status().json()["entries"] == []
        # The phone has said it read up to 0 only: everything stays for it.
        time.sleep(0.6)  # three runs of the job
        assert len(changes(phone, 0).raise_for_status().json()["entries"]) == 3
        assert changes(phone, 2).status_code == 200  # the phone now holds 1 and 2
        wait_until(lambda: changes(laptop, 1).status_code == 410, timeout=10)
        gone = changes(laptop, 1)
        assert gone.json()["error"]["code"] == "cursor_expired"
        assert "snapshot" in gone.json()["error"]["message"]
        kept = changes(phone, 2).raise_for_status().json()
        assert [entry["cursor"] for entry in kept["entries"]] == [3]
        snapshot = phone.get("/v1/snapshot").raise_for_status().json()
        assert snapshot["cursor"] == 3
        assert sorted(node["name"] for node in snapshot["nodes"]) == ["", "a", "b", "c"]
    finally:
        laptop.close()
        phone.close()
