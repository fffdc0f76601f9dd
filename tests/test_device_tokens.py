"""Device tokens: login codes, names, listing, and revocation seen by every server at once."""

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from backend.db import create_engine_for, migrate
from backend.db.engine import alembic_config
from backend.metadata import users
from backend.metadata.service import MetadataService
from backend.metadata.users import TOKEN_CACHE_S
from backend.protocol.errors import InvalidRequest, Unauthorized
from tests import postgres
from tests.support import mount as mount_fixtures
from tests.support.cluster import running_cluster
from tests.support.mount import MountFactory, server_file, wait_until
from tests.support.server import COMMAND_TIMEOUT_S, ServerProcess, cirrus_executable

postgres_server = postgres.postgres_server
database_url = postgres.database_url
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
mount_factory = mount_fixtures.mount_factory
drive_user = mount_fixtures.drive_user


def admin(server: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    """Run `cirrus admin ARGS` on the server's database."""
    return subprocess.run(
        [cirrus_executable(), "admin", *args, *server._storage_args()],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def login_code(server: ServerProcess, user: str) -> str:
    result = admin(server, "login-code", user)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def login(server: ServerProcess, code: str, device: str | None = "laptop") -> dict:
    with server.client() as client:
        answer = client.post("/v1/login", json={"code": code, "device": device})
    assert answer.status_code == 201, answer.text
    return answer.json()


def status(server: ServerProcess, token: str) -> int:
    with server.client(token) as client:
        return client.get("/v1/account").status_code


def test_a_login_code_gives_a_device_its_own_named_token_once(server: ServerProcess) -> None:
    server.create_user("alice")
    code = login_code(server, "alice")
    first = login(server, code)
    assert (first["user"], first["name"]) == ("alice", "laptop")
    assert status(server, first["token"]) == 200
    with server.client() as client:
        again = client.post("/v1/login", json={"code": code, "device": "laptop"})
        assert again.status_code == 401
        assert again.json()["error"]["code"] == "unauthorized"
        assert client.post("/v1/login", json={"code": "x" * 43}).status_code == 401
        assert client.post("/v1/login", json={"code": ""}).status_code == 400
        assert client.post("/v1/login", json={"device": "a"}).status_code == 400
    second = login(server, login_code(server, "alice"))
    assert second["name"] == "laptop-2"  # a second login of the same device name
    listed = admin(server, "tokens", "alice", "--json")
    assert listed.returncode == 0, listed.stderr
    tokens = {token["name"]: token for token in json.loads(listed.stdout)}
    assert set(tokens) == {"initial", "laptop", "laptop-2"}
    assert tokens["laptop"]["last_used"] is not None and tokens["laptop"]["revoked"] is None
    table = admin(server, "tokens", "alice")
    assert table.stdout.splitlines()[0].split()[:2] == ["NAME", "CREATED"]


def test_an_expired_login_code_is_refused(metadata: MetadataService) -> None:
    metadata.create_user("bob")
    code = metadata.create_login_code("bob", 1)
    time.sleep(1.1)
    with pytest.raises(Unauthorized):
        metadata.login(code, "phone")
    with pytest.raises(InvalidRequest):
        metadata.create_login_code("bob", 0)


def test_admin_commands_report_bad_input_in_one_line(server: ServerProcess) -> None:
    server.create_user("carol")
    for args, message in [
        (("tokens", "nobody"), "no user 'nobody'"),
        (("revoke", "carol", "nothing"), "no live token named 'nothing'"),
        (("login-code", "nobody"), "no user 'nobody'"),
    ]:
        result = admin(server, *args)
        assert result.returncode == 1
        assert result.stderr.startswith(f"cirrus admin {args[0]}: error: ")
        assert message in result.stderr and len(result.stderr.splitlines()) == 1
    bad_ttl = admin(server, "login-code", "carol", "--ttl", "0")
    assert bad_ttl.returncode == 2 and "error:" in bad_ttl.stderr


@pytest.fixture
def two_servers(tmp_path: Path, database_url: str) -> Iterator[list[ServerProcess]]:
    """Two `cirrus serve` processes on one database (a SQLite file or PostgreSQL)."""
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    with running_cluster(tmp_path, database_url, 2) as servers:
        yield servers


def test_a_revoked_token_is_refused_by_every_server_within_a_second(
    two_servers: list[ServerProcess],
) -> None:
    one, two = two_servers
    one.create_user("dave")
    laptop = login(one, login_code(one, "dave"), "laptop")["token"]
    phone = login(two, login_code(two, "dave"), "phone")["token"]
    for server in two_servers:  # both servers now hold the laptop's token in their cache
        assert status(server, laptop) == 200
    result = admin(one, "revoke", "dave", "laptop")
    assert result.returncode == 0, result.stderr
    time.sleep(TOKEN_CACHE_S + 0.05)  # the first request after the cache's life is refused
    for server in two_servers:
        assert status(server, laptop) == 401
        assert status(server, phone) == 200  # the user's other device is untouched
    listed = {t["name"]: t for t in json.loads(admin(one, "tokens", "dave", "--json").stdout)}
    assert listed["laptop"]["revoked"] is not None and listed["phone"]["revoked"] is None
    again = admin(one, "revoke", "dave", "laptop")
    assert again.returncode == 1 and "no live token named 'laptop'" in again.stderr


def test_the_migration_names_the_tokens_of_an_existing_drive(database_url: str) -> None:
    """A drive made before device tokens keeps working: its users' tokens become named."""
    engine = create_engine_for(database_url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
            connection.execute(text("INSERT INTO users (id, name, created) VALUES (1, 'eve', 0)"))
            for token_id, digest in ((1, "a" * 64), (2, "b" * 64)):
                connection.execute(
                    text(
                        "INSERT INTO tokens (id, user_id, token_hash, created) "
                        "VALUES (:i, 1, :h, 0)"
                    ),
                    {"i": token_id, "h": digest},
                )
        migrate(engine)
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT name, last_used, revoked FROM tokens ORDER BY id")
            ).all()
        assert rows == [("initial", None, None), ("token-2", None, None)]
    finally:
        engine.dispose()


def test_a_mount_whose_token_is_revoked_goes_offline_and_keeps_its_changes(
    server: ServerProcess, drive_user: str, mount_factory: MountFactory
) -> None:
    laptop = login(server, login_code(server, "alice"), "laptop")["token"]
    drive = mount_factory("laptop", token=laptop)
    assert admin(server, "revoke", "alice", "laptop").returncode == 0
    (drive.path / "after.txt").write_text("kept")
    status_file = drive.path / ".cirrus" / "status.json"
    status = wait_until(
        lambda: (s := json.loads(status_file.read_bytes()))["connection"] == "offline" and s,
        timeout=10,
    )
    assert status["upload_files"] == 1  # waits in the journal, nothing is lost
    with server.client(laptop) as client:
        assert client.get("/v1/tree/stat", params={"path": "/after.txt"}).status_code == 401
    drive.unmount()  # the journal keeps the change for the next mount of this cache
    drive.token_file.write_text(login(server, login_code(server, "alice"), "laptop")["token"])
    drive.mount()
    wait_until(lambda: server_file(server, drive_user, "/after.txt") == b"kept", timeout=30)


def test_no_secret_looks_like_a_command_line_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """A login code pasted after `--code` must not be read as an option of its own."""
    drawn = iter(["-UkmhmV9KcXf5EsCe", "Plain-secret_ok"])
    monkeypatch.setattr(users.secrets, "token_urlsafe", lambda _nbytes: next(drawn))
    assert users.new_secret() == "_UkmhmV9KcXf5EsCe"
    assert users.new_secret() == "Plain-secret_ok"
