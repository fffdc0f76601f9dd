"""The same server on PostgreSQL: `cirrus serve --db postgresql+psycopg://...` round trip."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import postgres_server  # noqa: F401  (the session fixture)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_server(postgres_server, tmp_path: Path) -> Iterator[ServerProcess]:  # noqa: F811
    server = ServerProcess(tmp_path / "server", db_url=postgres_server.create_database())
    try:
        server.start()
        yield server
    finally:
        server.stop()
    assert server.errors_logged() == [], server.log_tail(80)


def test_upload_download_round_trip_on_postgresql(pg_server: ServerProcess) -> None:
    data = os.urandom(1024 * 1024 + 99)
    token = pg_server.create_user("pg-alice")
    assert not (pg_server.data_dir / "metadata.db").exists()
    with pg_server.client(token) as alice:
        params = {"uploadType": "media", "path": "/pg/file.bin"}
        created = alice.post("/v1/files", params=params, content=data)
        assert created.status_code == 201, created.text
        assert created.json()["size"] == len(data)
        got = alice.get("/v1/files/content", params={"path": "/pg/file.bin"})
        assert got.status_code == 200 and got.content == data
        assert alice.get("/v1/account").json()["files"] == 1
