"""Shared configuration: `cirrus serve --config FILE`, the master key from a file or the
environment, and the key check value that keeps servers with different keys apart."""

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from backend.cli import _config
from backend.config_file import ConfigFileError, read_config_file
from backend.keys import KEY_ENV
from mountfs.cli import build_parser
from tests.support.server import ServerProcess, cirrus_executable, free_port

TIMEOUT_S = 60


def cirrus(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [cirrus_executable(), *args], capture_output=True, text=True, timeout=TIMEOUT_S, env=env
    )


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("cirrus serve: error: "), lines[0]
    for word in words:
        assert word in lines[0]
    return lines[0]


def config_of(*argv: str):
    return _config(build_parser().parse_args(["serve", *argv]))


def test_the_file_sets_fields_by_name_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "server.toml"
    path.parent.mkdir()
    path.write_text(
        'data_dir = "/srv/cirrus"\n'
        'db_url = "postgresql+psycopg://cirrus@db/cirrus"\n'
        'blocks_url = ["file:///srv/a", "file:///srv/b"]\n'
        'key_file = "master.key"\n'
        'read_key_files = ["old.key", "/etc/older.key"]\n'
        'host = "0.0.0.0"\nport = 9000\nlog_level = "warning"\n'
    )
    config = config_of("--config", str(path))
    assert config.data_dir == Path("/srv/cirrus")
    assert config.db_url == "postgresql+psycopg://cirrus@db/cirrus"
    assert config.blocks_url == "replicated:file:///srv/a|file:///srv/b"
    assert config.key_file == path.parent / "master.key"  # relative to the file
    assert config.read_key_files == (path.parent / "old.key", Path("/etc/older.key"))
    assert (config.host, config.port, config.log_level) == ("0.0.0.0", 9000, "warning")
    flags = config_of(
        "--config", str(path), "--port", "9001", "--db", "sqlite:///x.db",
        "--read-key-file", "a.key", "--read-key-file", "b.key",
    )  # fmt: skip
    assert (flags.port, flags.db_url, flags.host) == (9001, "sqlite:///x.db", "0.0.0.0")
    assert flags.read_key_files == (Path("a.key"), Path("b.key"))


def test_without_a_file_the_defaults_stay(tmp_path: Path) -> None:
    config = config_of("--data", str(tmp_path))
    assert (config.host, config.port, config.log_level, config.key_file) == (
        "127.0.0.1",
        8080,
        "info",
        None,
    )
    assert config.db_url == f"sqlite:///{tmp_path / 'metadata.db'}"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("colour = 'blue'\n", ["unknown setting 'colour'", "db_url"]),
        ("port = '80'\n", ["port must be int", "str"]),
        ("port = true\n", ["port must be int", "bool"]),
        ("key_file = 5\n", ["key_file must be Path"]),
        ("port = \n", ["not valid TOML"]),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "server.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as refused:
        read_config_file(path)
    for word in words:
        assert word in str(refused.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("colour = 'blue'\n", ["unknown setting 'colour'"]),
        ("port = 70000\n", ["port must be 0-65535"]),
        ("log_level = 'loud'\n", ["log_level must be one of"]),
    ],
)
def test_serve_reports_a_bad_file_in_one_line(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "server.toml"
    path.write_text(text)
    one_line_error(cirrus("serve", "--config", str(path), "--data", str(tmp_path)), *words)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    one_line_error(cirrus("serve", "--config", str(missing)), "cannot read config file")


def test_a_server_runs_from_its_file(tmp_path: Path) -> None:
    """The block store and the key come from the file; the key file is used, not created."""
    key = tmp_path / "master.key"
    key.write_text(secrets.token_hex(32) + "\n")
    path = tmp_path / "server.toml"
    path.write_text(f'blocks_url = "{tmp_path / "blocks"}"\nkey_file = "master.key"\n')
    server = ServerProcess(tmp_path / "data", extra_args=("--config", str(path)))
    try:
        server.start()
        with server.client(server.create_user("alice")) as alice:
            params = {"uploadType": "media", "path": "/a"}
            stored = alice.post("/v1/files", params=params, content=os.urandom(5000))
            assert stored.status_code == 201, stored.text
        assert any(p.is_file() for p in (tmp_path / "blocks").rglob("*"))
        assert not (tmp_path / "data" / "master.key").exists()
    finally:
        server.stop()
    assert server.errors_logged() == []


def test_the_key_may_come_from_the_environment(tmp_path: Path) -> None:
    """Two servers on one database: one with a key file, one with the same key in
    $CIRRUS_MASTER_KEY; the second reads blocks the first stored."""
    key = secrets.token_bytes(32)
    (tmp_path / "key").write_bytes(key)
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = ("--blocks", str(tmp_path / "blocks"))
    first = ServerProcess(tmp_path / "a", db, (*shared, "--key-file", str(tmp_path / "key")))
    second = ServerProcess(tmp_path / "b", db, shared, env={**os.environ, KEY_ENV: key.hex()})
    try:
        first.start()
        second.start()
        token = first.create_user("alice")
        with first.client(token) as via_first, second.client(token) as via_second:
            data = os.urandom(70_000)
            params = {"uploadType": "media", "path": "/f"}
            assert via_first.post("/v1/files", params=params, content=data).status_code == 201
            got = via_second.get("/v1/files/content", params={"path": "/f"})
            assert got.status_code == 200 and got.content == data
    finally:
        first.stop()
        second.stop()


def test_a_server_with_another_key_than_its_peers_refuses_to_start(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    (tmp_path / "k1").write_text(secrets.token_hex(32))
    (tmp_path / "k2").write_text(secrets.token_hex(32))
    peer = ServerProcess(tmp_path / "a", db, ("--key-file", str(tmp_path / "k1")))
    try:
        peer.start()
        result = cirrus("serve", "--data", str(tmp_path / "b"), "--db", db, "--port", "0",
                        "--key-file", str(tmp_path / "k2"))  # fmt: skip
        one_line_error(result, "master key differs", "key_file")
        env = {**os.environ, KEY_ENV: secrets.token_hex(32)}
        result = cirrus("serve", "--data", str(tmp_path / "c"), "--db", db, "--port", "0", env=env)
        one_line_error(result, "master key differs")
    finally:
        peer.stop()


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("missing", ["does not exist"]),
        ("short", ["holds 5 bytes", "expected 32"]),
        ("both", ["give the key once"]),
    ],
)
def test_bad_keys_are_one_line_errors(tmp_path: Path, setup: str, words: list[str]) -> None:
    key = tmp_path / "key"
    env = dict(os.environ)
    if setup == "short":
        key.write_bytes(b"short")
    if setup == "both":
        key.write_text(secrets.token_hex(32))
        env[KEY_ENV] = secrets.token_hex(32)
    args = ("serve", "--data", str(tmp_path / "d"), "--port", "0", "--key-file", str(key))
    one_line_error(cirrus(*args, env=env), *words)


def test_a_bad_key_in_the_environment_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, KEY_ENV: "not hex at all"}
    result = cirrus("serve", "--data", str(tmp_path), "--port", "0", env=env)
    one_line_error(result, f"${KEY_ENV}", "64 hex digits")


def test_a_server_with_an_unreachable_database_refuses_to_start(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://cirrus@127.0.0.1:{free_port()}/cirrus"
    result = cirrus("serve", "--data", str(tmp_path), "--db", url, "--port", "0")
    one_line_error(result, "cannot open the metadata database")
