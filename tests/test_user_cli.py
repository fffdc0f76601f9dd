"""The user's commands against a real server and mount: login, status, history, restore,
pin, trash, upload and download (resumed after a kill), and their one-line errors."""

import json
import os
import pty
import re
import shutil
import signal
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import mount as mount_fixtures
from tests.support.mount import MountProcess, server_file, wait_until
from tests.support.server import COMMAND_TIMEOUT_S, ServerProcess, cirrus_executable, free_port

mount_factory = mount_fixtures.mount_factory
drive = mount_fixtures.drive
drive_user = mount_fixtures.drive_user

COMMANDS = ("login", "status", "history", "restore", "pin", "trash", "upload", "download")


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose config and state directories are the test's own."""
    env = dict(os.environ)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("CIRRUS_TOKEN", None)
    return env


def cli(env: dict, *args: str, cwd: Path | None = None, stdin: str | None = None):
    return subprocess.run(
        [cirrus_executable(), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        input=stdin,
        timeout=COMMAND_TIMEOUT_S,
    )


def ok_json(env: dict, *args: str, cwd: Path | None = None) -> dict:
    result = cli(env, *args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def fails(result: subprocess.CompletedProcess, command: str, message: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"cirrus {command}: error: "), result.stderr
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def login(server: ServerProcess, env: dict, user: str, device: str = "box") -> dict:
    code = server_code(server, user)
    return ok_json(env, "login", server.url, "--code", code, "--device", device)


def server_code(server: ServerProcess, user: str) -> str:
    result = subprocess.run(
        [cirrus_executable(), "admin", "login-code", user, *server._storage_args()],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def write_uploaded(server: ServerProcess, token: str, drive: MountProcess, name: str, data: bytes):
    (drive.path / name).write_bytes(data)
    wait_until(lambda: server_file(server, token, "/" + name) == data, timeout=30)


def test_every_command_has_help(home: dict) -> None:
    commands = [*COMMANDS, "trash list", "trash restore", "trash purge"]
    with ThreadPoolExecutor(4) as pool:  # each is a process of its own, mostly Python's start
        results = list(pool.map(lambda command: cli(home, *command.split(), "--help"), commands))
    for command, result in zip(commands, results, strict=True):
        assert result.returncode == 0 and result.stdout.startswith(f"usage: cirrus {command}")


def test_login_stores_a_device_token_readable_only_by_the_user(
    server: ServerProcess, home: dict, tmp_path: Path
) -> None:
    server.create_user("alice")
    answer = login(server, home, "alice")
    assert (answer["user"], answer["token_name"]) == ("alice", "box")
    config = tmp_path / "config" / "cirrus" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert f'server = "{server.url}"' in config.read_text()
    status = ok_json(home, "status", cwd=tmp_path)  # outside any mount: the config's server
    assert (status["user"], status["connection"]) == ("alice", "online")
    by_stdin = cli(home, "login", server.url, stdin=server_code(server, "alice") + "\n")
    assert by_stdin.returncode == 0 and "as alice" in by_stdin.stdout
    fails(cli(home, "login", server.url, "--code", "wrong"), "login", "refused the login code")
    fails(cli(home, "login", "ftp://x", "--code", "c"), "login", "must start with http")


def test_status_inside_a_mount_shows_sync_state(
    server: ServerProcess, drive_user: str, drive: MountProcess, home: dict
) -> None:
    write_uploaded(server, drive_user, drive, "a.txt", b"hello")
    status = wait_until(
        lambda: (
            (s := ok_json(home, "status", "a.txt", cwd=drive.path))
            and s["pending_operations"] == 0
            and s
        )
    )
    assert status["connection"] == "online" and status["mountpoint"] == str(drive.path)
    assert status["path"] == {"path": "/a.txt", "state": "synced"}
    assert (status["upload_files"], status["upload_bytes"], status["conflicts"]) == (0, 0, [])
    human = cli(home, "status", cwd=drive.path)
    assert human.returncode == 0 and "connection:  online" in human.stdout
    fails(cli(home, "status", "missing.txt", cwd=drive.path), "status", "No such file")


def test_history_and_restore_through_the_mount_and_the_config(
    server: ServerProcess, drive_user: str, drive: MountProcess, home: dict, tmp_path: Path
) -> None:
    versions = [b"one\n", b"two\n", b"three\n"]
    for data in versions:
        write_uploaded(server, drive_user, drive, "f.txt", data)
    history = ok_json(home, "history", str(drive.path / "f.txt"))
    assert [r["size"] for r in history["revisions"]] == [6, 4, 4]  # newest first
    assert history["path"] == "/f.txt" and history["current"] == history["revisions"][0]["rev"]
    table = cli(home, "history", "f.txt", cwd=drive.path)
    assert "(current)" in table.stdout and table.stdout.startswith("  REV")
    restored = ok_json(home, "restore", "f.txt", cwd=drive.path)  # back to the previous one
    assert restored["rev"] == history["revisions"][1]["rev"]
    assert server_file(server, drive_user, "/f.txt") == b"two\n"
    wait_until(lambda: (drive.path / "f.txt").read_bytes() == b"two\n")
    login(server, home, "alice")
    first = history["revisions"][-1]["rev"]
    copied = ok_json(home, "restore", "/f.txt", "--rev", str(first), "--to", "/old/f1.txt")
    assert copied["to"] == "/old/f1.txt"
    assert server_file(server, drive_user, "/old/f1.txt") == b"one\n"
    copy_history = ok_json(home, "history", "/old/f1.txt", cwd=tmp_path)
    assert copy_history["revisions"][0]["device"] == "box"  # the logged-in device's name
    wait_until(lambda: (drive.path / "old" / "f1.txt").read_bytes() == b"one\n")


def _kill_when(process: subprocess.Popen, condition, timeout: float = 30.0) -> None:
    """SIGKILL the transfer once `condition()` holds (bounded in time)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if condition():
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout)


def test_upload_and_download_resume_after_a_kill(
    server: ServerProcess, home: dict, tmp_path: Path
) -> None:
    token = server.create_user("bob")
    login(server, home, "bob")
    data = os.urandom(12 << 20)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    resume = ["--chunk-size", "512K"]
    args = [*resume, "--bwlimit", "6M"]  # slow enough to be killed in the middle
    command = [cirrus_executable(), "upload", str(local), "/in/", *args]
    states = tmp_path / "state" / "cirrus" / "transfers"
    upload = subprocess.Popen(command, env=home, stderr=subprocess.DEVNULL)
    _kill_when(upload, lambda: _received(server, token, states) > 0)
    assert upload.returncode == -signal.SIGKILL
    done = ok_json(home, "upload", str(local), "/in/", *resume)  # the rest at full speed
    assert done["remote"] == "/in/big.bin" and 0 < done["resumed_from"] < len(data)
    assert server_file(server, token, "/in/big.bin") == data
    assert not any(states.iterdir())  # the state file goes with the finished transfer

    target = tmp_path / "out.bin"
    part = tmp_path / "out.bin.cirrus-part"
    command = [cirrus_executable(), "download", "/in/big.bin", str(target), *args]
    download = subprocess.Popen(command, env=home, stderr=subprocess.DEVNULL)
    _kill_when(download, lambda: part.exists() and part.stat().st_size > 0)
    assert download.returncode == -signal.SIGKILL and not target.exists()
    got = ok_json(home, "download", "/in/big.bin", str(target), *resume)
    assert 0 < got["resumed_from"] < len(data)
    assert target.read_bytes() == data and not part.exists()


def _received(server: ServerProcess, token: str, states: Path) -> int:
    """Bytes the server acknowledged of the upload whose session the state file names."""
    files = list(states.glob("upload-*.json")) if states.exists() else []
    if not files:
        return 0
    try:
        location = json.loads(files[0].read_text())["location"]
    except (ValueError, KeyError):
        return 0  # caught while being written
    with server.client(token) as client:
        answer = client.put(location, headers={"Content-Range": f"bytes */{12 << 20}"})
    header = answer.headers.get("Range", "bytes=0--1")
    return int(header.rpartition("-")[2]) + 1


def test_bad_input_is_one_line_errors(
    server: ServerProcess, drive_user: str, drive: MountProcess, home: dict, tmp_path: Path
) -> None:
    bad_token = tmp_path / "bad.token"
    bad_token.write_text("not-a-token")
    gone = f"http://127.0.0.1:{free_port()}"
    refusals = [  # (arguments, where they run, the command, what its one line says)
        (["history", "/nothing.txt"], drive.path, "history", "/nothing.txt"),
        (["history", "/a", "--server", server.url, "--token-file", str(bad_token)], None,
         "history", "refused the token"),
        (["status", "--server", gone, "--token-file", str(bad_token)], None,
         "status", f"cannot reach {gone}"),
        (["history", "/x"], tmp_path, "history", "no server"),
        (["upload", str(tmp_path / "none"), "/x"], None, "upload", "No such file"),
        (["download", "/missing", str(tmp_path)], drive.path, "download", "/missing"),
        (["restore", "/nothing"], drive.path, "restore", "nothing"),
    ]  # fmt: skip
    with ThreadPoolExecutor(4) as pool:  # none changes anything; each is a process
        results = list(pool.map(lambda r: cli(home, *r[0], cwd=r[1]), refusals))
    for (_args, _cwd, command, message), result in zip(refusals, results, strict=True):
        fails(result, command, message)
    usage = cli(home, "history")
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1


def test_status_counts_what_waits_while_the_server_is_down(
    server: ServerProcess, drive_user: str, drive: MountProcess, home: dict
) -> None:
    server.stop()
    try:
        (drive.path / "offline.bin").write_bytes(b"x" * 5000)
        (drive.path / "dir").mkdir()
        status = wait_until(
            lambda: (
                (s := ok_json(home, "status", "offline.bin", cwd=drive.path))
                and s["connection"] == "offline"
                and s
            )
        )
        assert (status["upload_files"], status["upload_bytes"]) == (1, 5000)
        assert status["pending_operations"] >= 2 and status["path"]["state"] == "pending"
    finally:
        server.start()
    wait_until(
        lambda: (
            (s := ok_json(home, "status", cwd=drive.path))["pending_operations"] == 0
            and s["connection"] == "online"
        ),
        timeout=30,
    )
    assert server_file(server, drive_user, "/offline.bin") == b"x" * 5000


def test_a_mount_uses_the_token_login_saved(
    server: ServerProcess, home: dict, tmp_path: Path
) -> None:
    server.create_user("carol")
    login(server, home, "carol", device="desk")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        mounted = cli(
            home, "mount", server.url, str(mountpoint), "--cache-dir", str(tmp_path / "c")
        )
        assert mounted.returncode == 0, mounted.stderr
        (mountpoint / "via-login.txt").write_text("hi")
        status = ok_json(home, "status", cwd=mountpoint)
        assert status["device"] and status["server"] == server.url
    finally:
        mount_fixtures.fusermount_unmount(mountpoint)
    tokens = subprocess.run(
        [cirrus_executable(), "admin", "tokens", "carol", "--json", *server._storage_args()],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    used = {t["name"]: t["last_used"] for t in json.loads(tokens.stdout)}
    assert used["desk"] is not None  # the mount authenticated with the device token


def test_a_terminal_gets_a_progress_bar_with_speed_and_time_left(
    server: ServerProcess, home: dict, tmp_path: Path
) -> None:
    server.create_user("dan")
    login(server, home, "dan")
    local = tmp_path / "p.bin"
    local.write_bytes(os.urandom(3 << 20))
    controller, terminal = pty.openpty()
    try:
        command = [cirrus_executable(), "upload", str(local), "/p.bin", "--chunk-size", "256K"]
        env = {**home, "COLUMNS": "120", "TERM": "xterm"}
        result = subprocess.run(
            [*command, "--bwlimit", "2M"], env=env, stderr=terminal, timeout=COMMAND_TIMEOUT_S
        )
        os.close(terminal)
        shown = b""
        while chunk := _read_some(controller):
            shown += chunk
    finally:
        os.close(controller)
    assert result.returncode == 0
    text = shown.decode(errors="replace")
    assert "/p.bin" in text and "MB/s" in text and re.search(r"\d:\d\d:\d\d", text), text
    quiet = cli(home, "upload", str(local), "/q.bin")  # stderr is a pipe: no bar
    assert quiet.returncode == 0 and quiet.stderr == ""


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO once the terminal's other side is closed and drained
        return b""


def test_pin_keeps_a_revision_and_history_shows_it(
    server: ServerProcess, drive_user: str, drive: MountProcess, home: dict
) -> None:
    for data in (b"first\n", b"second\n"):
        write_uploaded(server, drive_user, drive, "p.txt", data)
    first = ok_json(home, "history", "p.txt", cwd=drive.path)["revisions"][-1]["rev"]
    pinned = ok_json(home, "pin", "p.txt", "--rev", str(first), cwd=drive.path)
    assert (pinned["path"], pinned["rev"], pinned["pinned"]) == ("/p.txt", first, True)
    history = ok_json(home, "history", "p.txt", cwd=drive.path)["revisions"]
    assert [r["pinned"] for r in history] == [False, True]
    table = cli(home, "history", "p.txt", cwd=drive.path).stdout.splitlines()
    assert table[-1].endswith("uploaded pinned") and "pinned" not in table[1]
    human = cli(home, "pin", str(drive.path / "p.txt"), "--rev", str(first), "--unpin")
    assert human.returncode == 0 and human.stdout.startswith(f"unpinned /p.txt revision {first}")
    history = ok_json(home, "history", "p.txt", cwd=drive.path)["revisions"]
    assert not any(r["pinned"] for r in history)
    fails(cli(home, "pin", "/nothing.txt", "--rev", "1", cwd=drive.path), "pin", "/nothing.txt")
    fails(cli(home, "pin", "p.txt", "--rev", "99", cwd=drive.path), "pin", "no revision 99")
    usage = cli(home, "pin", "p.txt", cwd=drive.path)  # --rev is required
    assert usage.returncode == 2 and "--rev" in usage.stderr


def _trash(server: ServerProcess, token: str) -> list[dict]:
    """The trash as the API lists it (quicker to poll than a command)."""
    with server.client(token) as client:
        return client.get("/v1/trash").raise_for_status().json()["items"]


def test_trash_list_restore_and_purge(
    server: ServerProcess, drive_user: str, drive: MountProcess, home: dict
) -> None:
    assert cli(home, "trash", "list", cwd=drive.path).stdout == "the trash is empty\n"
    fails(cli(home, "trash", "restore", "a.txt", cwd=drive.path), "trash restore", "empty")
    (drive.path / "proj" / "src").mkdir(parents=True)
    (drive.path / "proj" / "src" / "main.py").write_text("print(1)\n")
    write_uploaded(server, drive_user, drive, "a.txt", b"alpha")
    write_uploaded(server, drive_user, drive, "b.txt", b"beta")
    os.unlink(drive.path / "a.txt")
    os.unlink(drive.path / "b.txt")
    shutil.rmtree(drive.path / "proj")
    wait_until(lambda: len(_trash(server, drive_user)) == 3, timeout=20)
    listed = ok_json(home, "trash", "list", cwd=drive.path)["items"]
    items = {item["path"]: item for item in listed}
    assert sorted(items) == ["/a.txt", "/b.txt", "/proj"]
    assert items["/proj"]["type"] == "dir" and items["/proj"]["files"] == 1
    table = cli(home, "trash", "list", cwd=drive.path).stdout.splitlines()
    assert table[0].split() == ["ID", "DELETED", "SIZE", "FILES", "DEVICE", "PATH"]
    assert sorted(line.split()[-1] for line in table[1:]) == ["/a.txt", "/b.txt", "/proj/"]

    back = ok_json(home, "trash", "restore", "a.txt", cwd=drive.path)  # where it was
    assert back["restored"] == [{"id": items["/a.txt"]["id"], "path": "/a.txt", "to": "/a.txt"}]
    proj = items["/proj"]["id"]
    human = cli(home, "trash", "restore", str(proj), cwd=drive.path)  # by id
    assert human.stdout == f"restored /proj (item {proj}) as /proj\n"
    wait_until(lambda: (drive.path / "a.txt").exists() and (drive.path / "proj").exists())
    assert (drive.path / "a.txt").read_bytes() == b"alpha"
    assert (drive.path / "proj" / "src" / "main.py").read_text() == "print(1)\n"

    fails(cli(home, "trash", "restore", "a.txt", cwd=drive.path), "trash restore", "/a.txt")
    fails(cli(home, "trash", "restore", "999999", cwd=drive.path), "trash restore", "no item")
    inside = cli(home, "trash", "restore", ".cirrus/trash/b.txt/x", cwd=drive.path)
    fails(inside, "trash restore", "is inside the trash item /b.txt")
    fails(cli(home, "trash", "purge", cwd=drive.path), "trash purge", "--all")
    fails(cli(home, "trash", "purge", "b.txt", "--all", cwd=drive.path), "trash purge", "--all")
    purged = ok_json(home, "trash", "purge", ".cirrus/trash/b.txt", cwd=drive.path)
    assert purged == {"purged": 1} and _trash(server, drive_user) == []
    with server.client(drive_user) as client:
        gone = client.get("/v1/files/history", params={"path": "/b.txt"})
    assert gone.status_code == 404  # purged for good, with its history
    os.unlink(drive.path / "a.txt")
    wait_until(lambda: _trash(server, drive_user), timeout=20)
    assert cli(home, "trash", "purge", "--all", cwd=drive.path).stdout.startswith("purged 1 ")
    assert _trash(server, drive_user) == []
