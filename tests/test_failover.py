"""PostgreSQL failover under load: the primary crashes and its synchronous replica is promoted
while a mount and an API client write. The server reconnects through its multi-host URL
without a restart; nothing it acknowledged is lost."""

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.postgres import ReplicatedPostgres, replicated_postgres  # noqa: F401
from tests.support.mount import MountProcess, server_file, wait_until
from tests.support.server import ServerProcess

pytestmark = pytest.mark.postgres

RESUME_LIMIT_S = 10.0


@pytest.fixture
def failover_server(
    replicated_postgres: ReplicatedPostgres,  # noqa: F811
    tmp_path: Path,
) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "server", db_url=replicated_postgres.create_database())
    try:
        server.start()
        yield server
    finally:
        server.stop()
    assert server.errors_logged() == [], server.log_tail(80)


class Writer(threading.Thread):
    """Writes numbered files until stopped, remembering when each one was acknowledged:
    closed (the mount's promise) or answered 201 (the API's)."""

    def __init__(self, write) -> None:
        super().__init__(daemon=True)
        self._write = write
        self.acknowledged: dict[str, tuple[bytes, float]] = {}
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.stop.is_set() and number < 5000:
            name = f"f{number:05d}.bin"
            data = os.urandom(1000 + number)
            try:
                if self._write(name, data):
                    self.acknowledged[name] = (data, time.monotonic())
            except Exception as exc:  # a mount write must never fail: the test reports it
                self.failures.append(f"{name}: {exc!r}")
            number += 1
            time.sleep(0.02)


def test_writes_resume_after_promotion_and_nothing_acknowledged_is_lost(
    replicated_postgres: ReplicatedPostgres,  # noqa: F811
    failover_server: ServerProcess,
    tmp_path: Path,
) -> None:
    token = failover_server.create_user("alice")
    drive = MountProcess(failover_server.url, token, tmp_path / "mnt", tmp_path / "cache")
    api = failover_server.client(token, timeout=30.0)

    def through_mount(name: str, data: bytes) -> bool:
        (drive.path / name).write_bytes(data)
        return True

    def through_api(name: str, data: bytes) -> bool:
        params = {"uploadType": "media", "path": f"/api/{name}"}
        try:
            return api.post("/v1/files", params=params, content=data).status_code == 201
        except httpx.TransportError:
            return False  # never acknowledged: may or may not have landed

    writers = [Writer(through_mount), Writer(through_api)]
    try:
        drive.mount()
        for writer in writers:
            writer.start()
        wait_until(lambda: len(writers[0].acknowledged) > 20 and len(writers[1].acknowledged) > 20)
        replicated_postgres.stop_primary()
        time.sleep(1.0)  # writes pile up in the mount's journal, the API answers 503
        replicated_postgres.promote_replica()
        promoted = time.monotonic()

        def after_promotion_on_server() -> bool:
            later = [n for n, (_, t) in writers[0].acknowledged.items() if t > promoted]
            return bool(later) and server_file(failover_server, token, f"/{later[0]}") is not None

        wait_until(after_promotion_on_server, timeout=RESUME_LIMIT_S + 5)
        resumed = time.monotonic() - promoted
        print(f"writes resumed {resumed:.2f}s after the promotion")
        assert resumed < RESUME_LIMIT_S, f"writes resumed {resumed:.1f}s after the promotion"
        time.sleep(0.5)
    finally:
        for writer in writers:
            writer.stop.set()
            writer.join(30)
        api.close()
    try:
        assert writers[0].failures == [] and writers[1].failures == []
        mounted = writers[0].acknowledged
        wait_until(lambda: server_file(failover_server, token, f"/{max(mounted)}") is not None, 30)
        with failover_server.client(token) as client:
            for name, (data, _) in {**mounted, **_prefixed(writers[1].acknowledged)}.items():
                got = client.get("/v1/files/content", params={"path": f"/{name}"})
                assert got.status_code == 200 and got.content == data, name
    finally:
        drive.unmount()
    assert drive.errors_logged() == [], drive.log_tail()


def _prefixed(acknowledged: dict[str, tuple[bytes, float]]) -> dict[str, tuple[bytes, float]]:
    return {f"api/{name}": value for name, value in acknowledged.items()}
