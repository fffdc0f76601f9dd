"""A real `cirrus serve` process for tests: started on a free 127.0.0.1 port, always stopped.

    with ServerProcess(tmp_path / "server") as server:    # start() ... stop()
        token = server.create_user("alice")
        client = server.client(token)                      # an httpx.Client for the API
        server.kill(); server.start()                      # crash and restart on the same data

The server's output goes to `server.log_path`; `errors_logged()` finds tracebacks in it, so a
test can fail on a server-side bug that the HTTP answer alone would not show.
"""

import functools
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support import logs

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 60.0


def cirrus_executable() -> str:
    """The `cirrus` console script of the environment running the tests."""
    return str(Path(sys.executable).with_name("cirrus"))


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client of the tests. httpx builds a new one for each client
    (the CA bundle read, about 30 ms: more than a request to a local server), and a test that
    polls the server with a fresh client each time paid that per poll. The tests speak plain
    HTTP to 127.0.0.1, so the context is never used for a handshake."""
    return ssl.create_default_context()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One `cirrus serve` on its own data directory (and optionally another database URL)."""

    def __init__(
        self,
        data_dir: Path,
        db_url: str | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.db_url = db_url
        self.extra_args = extra_args
        self.env = env  # the server's environment (None: the tests' own)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._metadata = None  # in-process access to the database, for add_user

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _storage_args(self) -> list[str]:
        args = ["--data", str(self.data_dir)]
        return [*args, "--db", self.db_url] if self.db_url else args

    def start(self, timeout: float = START_TIMEOUT_S) -> "ServerProcess":
        """Start (or restart, on the same port) the server; wait until /v1/health answers."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("server is already running")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        command = [cirrus_executable(), "serve", *self._storage_args(), "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*command, *self.extra_args], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"cirrus serve exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self._healthy():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"cirrus serve not ready after {timeout}s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            url, tls = f"{self.url}/v1/health", tls_context()
            return httpx.get(url, timeout=1.0, trust_env=False, verify=tls).status_code == 200
        except httpx.TransportError:
            return False

    def _close_metadata(self) -> None:
        """Close add_user's connections to the database (before the server goes away)."""
        if self._metadata is not None:
            self._metadata.engine.dispose()
            self._metadata = None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; return the exit status."""
        self._close_metadata()
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        self._close_metadata()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def create_user(self, name: str) -> str:
        """Make a user and return the token: what `cirrus admin create-user` does on the
        server's data. While the server runs (its database made and migrated) the user is made
        in the tests' process (add_user), else by the command itself; test_cli_server.py
        tests the command."""
        if self.process is not None and self.process.poll() is None:
            return self.add_user(name)
        return self.create_user_command(name)

    def create_user_command(self, name: str) -> str:
        """Run `cirrus admin create-user` on the server's data and return the token."""
        result = subprocess.run(
            [cirrus_executable(), "admin", "create-user", name, *self._storage_args()],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise RuntimeError(f"create-user {name} failed: {result.stderr.strip()}")
        return result.stdout.strip().splitlines()[-1]

    def add_user(self, name: str) -> str:
        """Create a user directly in the server's database: what `cirrus admin create-user`
        does, without starting a process (the database must exist and be migrated)."""
        if self._metadata is None:
            from backend.db import create_engine_for
            from backend.metadata.service import MetadataService
            from backend.notify import LocalNotifier

            url = self.db_url or f"sqlite:///{self.data_dir / 'metadata.db'}"
            self._metadata = MetadataService(create_engine_for(url), LocalNotifier(lambda _: 0))
        return self._metadata.create_user(name)

    def client(
        self, token: str | None = None, device: str | None = None, **options
    ) -> httpx.Client:
        """An HTTP client for this server, authenticated with token when given."""
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if device is not None:
            headers["X-Cirrus-Device"] = device
        options.setdefault("timeout", 30.0)
        options.setdefault("trust_env", False)  # 127.0.0.1 only, never through a proxy
        options.setdefault("verify", tls_context())
        return httpx.Client(base_url=self.url, headers=headers, **options)

    def log_tail(self, lines: int = 40) -> str:
        return logs.tail(self.log_path, lines)

    def errors_logged(self) -> list[str]:
        """Lines of the log that show a server-side bug (an exception with its traceback)."""
        return logs.tracebacks(self.log_path)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
