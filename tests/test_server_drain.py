"""What a load balancer and a service manager rely on: /v1/health tells whether the database
and the block store answer; SIGTERM drains (polls answered, requests in flight finished);
SIGHUP drains and starts again in the same process."""

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.postgres import PostgresServer, postgres_server  # noqa: F401  (session fixture)
from tests.support.cluster import shared_args
from tests.support.server import ServerProcess


def wait_for_status(client: httpx.Client, status: int, within: float = 15) -> dict:
    """Poll /v1/health until it answers status (bounded in time)."""
    deadline = time.monotonic() + within
    while True:
        got = client.get("/v1/health")
        if got.status_code == status or time.monotonic() > deadline:
            assert got.status_code == status, got.text
            return got.json()
        time.sleep(0.1)


def test_health_reports_an_unreachable_block_store(tmp_path: Path) -> None:
    blocks = tmp_path / "blocks"
    server = ServerProcess(tmp_path / "data", extra_args=("--blocks", str(blocks)))
    try:
        server.start()
        with server.client() as client:
            assert client.get("/v1/health").json() == {
                "status": "ok",
                "database": "ok",
                "blocks": "ok",
            }
            shutil.rmtree(blocks)  # a block store mount that went away
            assert wait_for_status(client, 503) == {
                "status": "unavailable",
                "database": "ok",
                "blocks": "unreachable",
            }
            blocks.mkdir()
            wait_for_status(client, 200)
    finally:
        server.stop()
    assert "the blocks is unreachable" not in server.log_path.read_text()
    assert "health: the blocks are unreachable" in server.log_path.read_text()
    assert server.errors_logged() == []


def admin_dsn(postgres: PostgresServer) -> str:
    return f"host={postgres.host} port={postgres.port} user={postgres.user} dbname=postgres"


def refuse_connections(postgres: PostgresServer, database: str, refuse: bool) -> None:
    """Make the database refuse new connections and drop the open ones (or allow them again)."""
    with psycopg.connect(admin_dsn(postgres), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {not refuse}')
        if refuse:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )


@pytest.fixture
def pg_server(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[ServerProcess]:  # noqa: F811
    url = postgres_server.create_database()
    server = ServerProcess(tmp_path / "server", url, shared_args(tmp_path))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.postgres
def test_health_reports_an_unreachable_database(pg_server, postgres_server) -> None:  # noqa: F811
    database = pg_server.db_url.rsplit("/", 1)[1]
    with pg_server.client() as client:
        wait_for_status(client, 200)
        refuse_connections(postgres_server, database, True)
        try:
            assert wait_for_status(client, 503)["database"] == "unreachable"
        finally:
            refuse_connections(postgres_server, database, False)
        wait_for_status(client, 200)


def slow_body(chunks: int, pause: float, sent: threading.Event) -> Iterator[bytes]:
    for index in range(chunks):
        yield os.urandom(64 * 1024)
        if index == 0:
            sent.set()
        time.sleep(pause)


def refuses_new_connections(server: ServerProcess, within: float) -> bool:
    """Whether a new connection is refused before `within` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{server.url}/v1/health", timeout=1, trust_env=False)
        except httpx.ConnectError:
            return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def test_sigterm_answers_polls_finishes_requests_in_flight_and_exits(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    try:
        server.start()
        token = server.create_user("alice")
        with server.client(token) as poller, server.client(token) as uploader:
            cursor = poller.get("/v1/account").json()["cursor"]
            answers: dict[str, httpx.Response] = {}
            started = threading.Event()

            def poll() -> None:
                params = {"cursor": cursor, "timeout": 60}
                answers["poll"] = poller.get("/v1/changes/poll", params=params)

            def upload() -> None:
                params = {"uploadType": "media", "path": "/slow.bin"}
                body = slow_body(20, 0.1, started)
                answers["upload"] = uploader.post("/v1/files", params=params, content=body)

            threads = [threading.Thread(target=f, daemon=True) for f in (poll, upload)]
            for thread in threads:
                thread.start()
            assert started.wait(10)
            time.sleep(0.2)
            stopping = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert refuses_new_connections(server, within=5)
            assert threads[1].is_alive()  # the upload is still in flight meanwhile
            for thread in threads:
                thread.join(15)
            assert answers["poll"].json() == {"changes": False, "cursor": cursor}
            assert answers["upload"].status_code == 201, answers["upload"].text
            assert answers["upload"].json()["size"] == 20 * 64 * 1024
            assert server.process.wait(15) == 0
            assert time.monotonic() - stopping < 8
    finally:
        server.stop()
    assert server.errors_logged() == []


def test_sighup_drains_and_starts_again_in_the_same_process(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    try:
        server.start()
        token = server.create_user("bob")
        pid = server.process.pid
        with server.client(token) as client:
            cursor = client.get("/v1/account").json()["cursor"]
            answers: list[httpx.Response] = []
            params = {"cursor": cursor, "timeout": 60}
            poll = threading.Thread(
                target=lambda: answers.append(client.get("/v1/changes/poll", params=params)),
                daemon=True,
            )
            poll.start()
            time.sleep(0.5)
            server.process.send_signal(signal.SIGHUP)
            poll.join(15)
            assert answers and answers[0].json()["changes"] is False
        deadline = time.monotonic() + 30
        while not server._healthy():
            assert server.process.poll() is None, server.log_tail()
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
        assert server.process.pid == pid
        with server.client(token) as client:
            assert client.get("/v1/account").json()["user"] == "bob"
        assert server.log_path.read_text().count("cirrus serve: listening on") == 2
    finally:
        server.stop()
    assert server.errors_logged() == []
