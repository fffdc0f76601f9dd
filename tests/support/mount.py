"""A real Cirrus mount for tests: `cirrus mount --foreground` in a subprocess, always unmounted.

    with MountProcess(server.url, token, tmp_path / "mnt", tmp_path / "cache") as drive:
        (drive.path / "a.txt").write_text("hello")
        drive.unmount(); drive.mount()                # remount on the same cache
        drive.kill9()                                 # crash: nothing acknowledged may be lost

Fixtures (bind them in a test module: `mount_factory = mount_fixtures.mount_factory`, with
`from tests.support import mount as mount_fixtures`): `mount_factory(name="a")` makes mounts on the
`server` fixture that are unmounted after the test whatever happens; `drive` is one mount for
a fresh user; `drive_user` is that user's token. Every wait is bounded, and a mount that
cannot be unmounted politely is detached lazily (`fusermount3 -uz`) so a test never hangs CI.
"""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.support import logs
from tests.support.server import ServerProcess, cirrus_executable

MOUNT_TIMEOUT_S = 30.0
UNMOUNT_TIMEOUT_S = 30.0


def is_mounted(path: Path) -> bool:
    """Read the mount table (stat on a dead FUSE mount could hang)."""
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        return any(line.split()[4].encode().decode("unicode_escape") == target for line in table)


def fusermount_unmount(path: Path) -> None:
    """`fusermount3 -u`, then `-uz` when the mount is busy or dead."""
    for flags in ("-u", "-uz"):
        if not is_mounted(path):
            return
        subprocess.run(["fusermount3", flags, str(path)], capture_output=True, timeout=30)


class MountProcess:
    """One `cirrus mount` of a user's drive with its own cache directory."""

    def __init__(
        self,
        server_url: str,
        token: str,
        path: Path,
        cache_dir: Path,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.server_url = server_url
        self.path = Path(path)
        self.cache_dir = Path(cache_dir)
        self.extra_args = extra_args
        self.token_file = self.cache_dir.parent / f"{self.cache_dir.name}.token"
        self.log_path = self.cache_dir.parent / f"{self.cache_dir.name}.log"
        self.process: subprocess.Popen | None = None
        self.path.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(token)

    def command(self) -> list[str]:
        return [
            cirrus_executable(), "mount", self.server_url, str(self.path),
            "--token-file", str(self.token_file), "--cache-dir", str(self.cache_dir),
            "--foreground", *self.extra_args,
            *(["--debug"] if os.environ.get("CIRRUS_TEST_MOUNT_DEBUG") else []),
        ]  # fmt: skip

    def mount(self, timeout: float = MOUNT_TIMEOUT_S) -> "MountProcess":
        """Start the mount and wait until the directory is mounted."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_mounted(self.path):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"cirrus mount exited:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill9()
        raise RuntimeError(f"cirrus mount not ready after {timeout}s:\n{self.log_tail()}")

    def unmount(self, timeout: float = UNMOUNT_TIMEOUT_S) -> int | None:
        """Unmount as a user would and wait for the process to finish flushing."""
        fusermount_unmount(self.path)
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return self.process.returncode

    def kill9(self) -> None:
        """SIGKILL the mount process (a crash), then detach the dead mount."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(UNMOUNT_TIMEOUT_S)
        fusermount_unmount(self.path)

    def log_tail(self, lines: int = 60) -> str:
        return logs.tail(self.log_path, lines)

    def errors_logged(self) -> list[str]:
        return logs.tracebacks(self.log_path)

    def __enter__(self) -> "MountProcess":
        return self.mount()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmount()


def wait_until(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.05):
    """Poll `condition` until it returns something true; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(step)


def server_file(server: ServerProcess, token: str, path: str) -> bytes | None:
    """The current content of a drive file as the server serves it (None when absent)."""
    with server.client(token) as client:
        answer = client.get("/v1/files/content", params={"path": path})
    if answer.status_code in (404, 409):
        return None
    answer.raise_for_status()
    return answer.content


def synced(path: os.PathLike) -> bool:
    """Whether the mount reports the file as on the server (its `user.cirrus.status`)."""
    return os.getxattr(path, "user.cirrus.status") == b"synced"


def server_stat(server: ServerProcess, token: str, path: str) -> dict | None:
    """A node's stat as the server answers it (None when absent, or when a folder on its
    path is a file for now, as it is while renames are still arriving)."""
    with server.client(token) as client:
        answer = client.get("/v1/tree/stat", params={"path": path})
    return None if answer.status_code in (404, 409) else answer.raise_for_status().json()


def account(server: ServerProcess, token: str) -> dict:
    with server.client(token) as client:
        return client.get("/v1/account").raise_for_status().json()


MountFactory = Callable[..., MountProcess]


@pytest.fixture
def drive_user(server: ServerProcess) -> str:
    """A new user of the server, made in the tests' process (what `cirrus admin create-user`
    does, which test_cli_server.py runs, without starting a process for every mount test)."""
    return server.add_user("alice")


@pytest.fixture
def mount_factory(server: ServerProcess, drive_user: str, tmp_path: Path) -> Iterator[MountFactory]:
    """Make (and mount) drives of `drive_user`; all are unmounted after the test."""
    made: list[MountProcess] = []

    def make(name: str = "a", token: str | None = None, mount: bool = True) -> MountProcess:
        drive = MountProcess(
            server.url, token or drive_user, tmp_path / f"mnt-{name}", tmp_path / f"cache-{name}"
        )
        made.append(drive)
        return drive.mount() if mount else drive

    try:
        yield make
    finally:
        for drive in made:
            drive.unmount()
    errors = [line for drive in made for line in drive.errors_logged()]
    if errors:
        pytest.fail("the mount logged errors:\n" + "\n".join(d.log_tail() for d in made))


@pytest.fixture
def drive(mount_factory: MountFactory) -> MountProcess:
    return mount_factory("a")


@contextlib.contextmanager
def module_drive(
    server: ServerProcess, base: Path, user: str, extra_args: tuple[str, ...] = ()
) -> Iterator[tuple[MountProcess, str, ServerProcess]]:
    """A mount for a new user that a whole test module shares: always unmounted afterwards,
    and the module fails if the mount logged an unexpected error or did not end by itself
    once unmounted (a file the tests left open keeps the mount busy until it is killed)."""
    token = server.add_user(user)
    drive = MountProcess(server.url, token, base / "mnt", base / "cache", extra_args)
    try:
        drive.mount()
        yield drive, token, server
    finally:
        exit_code = drive.unmount()
    assert drive.errors_logged() == [], drive.log_tail()
    assert exit_code == 0, f"the mount ended with {exit_code} after the unmount"
