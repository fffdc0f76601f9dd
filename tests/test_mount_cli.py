"""`cirrus mount` / `cirrus unmount` as users run them: daemon mode, mount(8), and errors.

Every error case must give one line on stderr, a non-zero exit, and leave nothing mounted.
"""

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountfs.mount_cli import parse_size, rewrite_mount_helper_argv
from tests.support.mount import (
    MountProcess,
    fusermount_unmount,
    is_mounted,
    server_file,
    wait_until,
)
from tests.support.server import ServerProcess, cirrus_executable, free_port

COMMAND_TIMEOUT_S = 60


@pytest.fixture
def server(shared_server: ServerProcess) -> ServerProcess:
    """One server for the module: these tests isolate themselves by user."""
    return shared_server


@pytest.fixture
def drive_user(shared_server: ServerProcess, request: pytest.FixtureRequest) -> str:
    return shared_server.create_user(request.node.name[:40].replace("_", "-"))


@pytest.fixture
def places(tmp_path: Path, drive_user: str) -> Iterator[dict[str, Path]]:
    """A mount point, a cache dir and a token file; whatever gets mounted is unmounted."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text(drive_user)
    paths = {"mnt": mountpoint, "cache": tmp_path / "cache", "token": token_file}
    try:
        yield paths
    finally:
        fusermount_unmount(mountpoint)
        _wait_cache_released(paths["cache"])


def _wait_cache_released(cache: Path, timeout: float = 30.0) -> bool:
    """True once no mount process holds the cache directory (it has exited)."""
    lock = cache / "lock"
    if not lock.exists():
        return True
    deadline = time.monotonic() + timeout
    with open(lock, "a") as file:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                time.sleep(0.05)
    return False


def cirrus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [cirrus_executable(), *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


def mount_args(server_url: str, places: dict[str, Path]) -> list[str]:
    return [
        "mount", server_url, str(places["mnt"]),
        "--token-file", str(places["token"]), "--cache-dir", str(places["cache"]),
    ]  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert words in lines[0], lines[0]


def test_mount_returns_when_ready_and_unmount_ends_it(
    server: ServerProcess, drive_user: str, places: dict[str, Path]
) -> None:
    result = cirrus(*mount_args(server.url, places))
    assert result.returncode == 0, result.stderr
    assert is_mounted(places["mnt"])  # ready the moment the command returns
    (places["mnt"] / "hello.txt").write_text("daemon")
    wait_until(lambda: server_file(server, drive_user, "/hello.txt") == b"daemon")
    result = cirrus("unmount", str(places["mnt"]))
    assert result.returncode == 0, result.stderr
    assert not is_mounted(places["mnt"])
    assert _wait_cache_released(places["cache"])
    assert "Traceback" not in (places["cache"] / "mount.log").read_text()


def test_unmount_of_a_plain_directory_fails_cleanly(tmp_path: Path) -> None:
    assert_one_line_error(cirrus("unmount", str(tmp_path)), "not mounted")


@pytest.mark.skipif(shutil.which("mount.fuse3") is None, reason="mount.fuse3 missing")
def test_mount_t_fuse_cirrus(
    server: ServerProcess, drive_user: str, places: dict[str, Path]
) -> None:
    options = f"token_file={places['token']},cache_dir={places['cache']},_netdev,nosuid,nodev,rw"
    environment = {**os.environ, "PATH": f"{Path(cirrus_executable()).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["mount", "-t", "fuse.cirrus", server.url, str(places["mnt"]), "-o", options],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert is_mounted(places["mnt"])
    (places["mnt"] / "via-mount.txt").write_text("fstab")
    wait_until(lambda: server_file(server, drive_user, "/via-mount.txt") == b"fstab")
    subprocess.run(["umount", str(places["mnt"])], check=True, timeout=COMMAND_TIMEOUT_S)
    assert not is_mounted(places["mnt"])


def test_server_unreachable_with_empty_cache(places: dict[str, Path]) -> None:
    result = cirrus(*mount_args(f"http://127.0.0.1:{free_port()}", places))
    assert_one_line_error(result, "cannot reach the server")
    assert not is_mounted(places["mnt"])


def test_wrong_token(server: ServerProcess, places: dict[str, Path]) -> None:
    places["token"].write_text("not-a-real-token")
    result = cirrus(*mount_args(server.url, places))
    assert_one_line_error(result, "refused the token")
    assert not is_mounted(places["mnt"])


def test_mountpoint_missing_or_not_empty(server: ServerProcess, places: dict[str, Path]) -> None:
    missing = dict(places, mnt=places["mnt"] / "nope")
    assert_one_line_error(cirrus(*mount_args(server.url, missing)), "does not exist")
    (places["mnt"] / "file").write_text("x")
    assert_one_line_error(cirrus(*mount_args(server.url, places)), "not empty")
    assert not is_mounted(places["mnt"])


def test_missing_token_file(server: ServerProcess, places: dict[str, Path]) -> None:
    places["token"].unlink()
    assert_one_line_error(cirrus(*mount_args(server.url, places)), "cannot read token file")


def test_cache_dir_in_use_by_another_mount(
    server: ServerProcess, places: dict[str, Path], tmp_path: Path
) -> None:
    assert cirrus(*mount_args(server.url, places)).returncode == 0
    other = tmp_path / "mnt2"
    other.mkdir()
    result = cirrus(*mount_args(server.url, dict(places, mnt=other)))
    assert_one_line_error(result, "in use by another mount")
    assert not is_mounted(other)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare missing")
def test_no_dev_fuse(server: ServerProcess, places: dict[str, Path]) -> None:
    """Hide /dev/fuse for real in a private mount namespace (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    command = " ".join([cirrus_executable(), *mount_args(server.url, places)])
    script = f"mount -t tmpfs none /dev && touch /dev/null && exec {command}"
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
    )  # fmt: skip
    assert_one_line_error(result, "/dev/fuse")


def test_mount_helper_argv_is_rewritten() -> None:
    argv = ["http://h:1", "/mnt", "-o", "rw,nosuid,_netdev,token_file=/t,cache_dir=/c"]
    assert rewrite_mount_helper_argv(argv) == [
        "mount", "http://h:1", "/mnt", "--token-file", "/t", "--cache-dir", "/c",
    ]  # fmt: skip
    argv = ["https://h", "/mnt", "-o", "allow_other,cache_size=2G"]
    assert rewrite_mount_helper_argv(argv) == [
        "mount", "https://h", "/mnt", "--allow-other", "--cache-size", "2G",
    ]  # fmt: skip
    assert rewrite_mount_helper_argv(["mount", "http://h", "/m"]) == ["mount", "http://h", "/m"]
    assert parse_size("10G") == 10 << 30
    assert parse_size("512M") == 512 << 20


def test_unknown_mount_option_is_a_one_line_error(places: dict[str, Path]) -> None:
    result = cirrus("http://127.0.0.1:1", str(places["mnt"]), "-o", "bogus=1")
    assert result.returncode != 0
    assert "bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_unmounts_and_flushes(
    server: ServerProcess, drive_user: str, places: dict[str, Path]
) -> None:
    """What systemd does to stop a foreground mount."""
    drive = MountProcess(server.url, drive_user, places["mnt"], places["cache"]).mount()
    try:
        (drive.path / "term.txt").write_text("flushed on SIGTERM")
        drive.process.terminate()
        assert drive.process.wait(COMMAND_TIMEOUT_S) == 0
        assert not is_mounted(places["mnt"])
        assert server_file(server, drive_user, "/term.txt") == b"flushed on SIGTERM"
    finally:
        drive.unmount()
