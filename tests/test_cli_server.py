"""The server's command line, `cirrus serve` and `cirrus admin create-user`."""

import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, cirrus_executable

TIMEOUT_S = 60


def cirrus(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [cirrus_executable(), *args], capture_output=True, text=True, timeout=TIMEOUT_S, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0] and "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_serve_help_documents_every_option() -> None:
    result = cirrus("serve", "--help")
    assert result.returncode == 0
    for option in ("--data", "--host", "--port", "--db", "--blocks", "--log-level", "--config",
                   "--key-file", "--read-key-file", "--drain-timeout", "--trash-days",
                   "--trash-interval", "--journal-days", "--journal-interval"):  # fmt: skip
        assert option in result.stdout
    assert "XDG_DATA_HOME" in result.stdout


def test_admin_help_lists_create_user() -> None:
    result = cirrus("admin", "--help")
    assert result.returncode == 0 and "create-user" in result.stdout
    assert "set-quota" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["serve", "--port", "http"], ["--port", "http"]),
        (["serve", "--port", "70000"], ["65535"]),
        (["serve", "--log-level", "loud"], ["--log-level"]),
        (["admin"], []),
        (["admin", "create-user"], ["name"]),
        (["serve", "--trash-days", "-1"], ["--trash-days", ">= 0"]),
        (["serve", "--journal-interval", "soon"], ["--journal-interval", "soon"]),
        (["admin", "set-quota", "alice"], ["size"]),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], words: list[str]) -> None:
    result = cirrus(*args)
    assert result.returncode == 2
    assert_one_line_error(result, *words)


def test_unknown_option_ends_in_an_error_line() -> None:
    # Left-over arguments are reported by the top-level `cirrus` parser, with its usage line.
    result = cirrus("serve", "--frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--frobnicate" in result.stderr.strip().splitlines()[-1]


def test_unusable_database_url_is_a_one_line_error(tmp_path: Path) -> None:
    result = cirrus("serve", "--data", str(tmp_path), "--db", "nosuchdb://x/y", "--port", "0")
    assert result.returncode == 1
    assert_one_line_error(result, "database")


def test_unknown_block_store_is_a_one_line_error(tmp_path: Path) -> None:
    result = cirrus("serve", "--data", str(tmp_path), "--blocks", "tape://drive0", "--port", "0")
    assert result.returncode == 1
    assert_one_line_error(result, "tape")


def test_unwritable_data_dir_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cirrus("admin", "create-user", "alice", "--data", str(blocker / "data"))
    assert_one_line_error(result)


def test_create_user_prints_the_token_last_and_refuses_a_duplicate(tmp_path: Path) -> None:
    first = cirrus("admin", "create-user", "alice", "--data", str(tmp_path))
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip().splitlines()[-1]
    assert len(token) >= 20 and " " not in token
    again = cirrus("admin", "create-user", "alice", "--data", str(tmp_path))
    assert again.returncode == 1
    assert_one_line_error(again, "alice")


def test_default_data_dir_follows_xdg(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    result = cirrus("admin", "create-user", "carol", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "xdg" / "cirrus" / "metadata.db").is_file()


def test_serve_creates_its_data_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = subprocess.Popen(
        [cirrus_executable(), "serve", "--data", str(data), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = _read_ready_line(process)
        url = ready.rsplit(" ", 1)[-1]
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
            assert client.get("/v1/health").json()["status"] == "ok"
            assert client.get("/v1/account").status_code == 401
        key = data / "master.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
        assert (data / "metadata.db").is_file() and (data / "uploads").is_dir()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=TIMEOUT_S)
        assert process.returncode == 0
        assert "Traceback" not in output
        assert '"GET /v1/health HTTP/1.1" 200' in output  # one access line per request
    finally:
        process.kill()
        process.wait(TIMEOUT_S)


def _read_ready_line(process: subprocess.Popen) -> str:
    """The 'listening on' line; bounded by the number of lines start-up prints."""
    for _ in range(100):
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("cirrus serve: listening on http://127.0.0.1:"):
            return line.strip()
    raise AssertionError("cirrus serve never said it was listening")


def test_a_taken_port_is_reported_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cirrus("serve", "--data", str(tmp_path), "--port", str(port))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert "address already in use" in (result.stderr + result.stdout).lower()


def test_restart_keeps_users_and_key(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    try:
        server.start()
        token = server.create_user("dave")
        key = (server.data_dir / "master.key").read_bytes()
        assert server.stop() == 0
        server.start()
        with server.client(token) as client:
            assert client.get("/v1/account").json()["user"] == "dave"
        assert (server.data_dir / "master.key").read_bytes() == key
    finally:
        server.stop()
