"""A real HAProxy for tests, running the configuration shipped in docs/haproxy.cfg.

    with HAProxy(tmp_path / "haproxy", [s.port for s in servers]) as balancer:
        httpx.get(f"{balancer.url}/v1/health")
        balancer.server_states()            # {"cirrus1": "UP", "cirrus2": "DOWN", ...}

Only the addresses change: the frontend binds a free 127.0.0.1 port and the `server` lines
name the test's servers; timeouts, health checks and limits are the shipped ones. An admin
socket is added so tests can read what the balancer thinks of each server.
"""

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support import logs
from tests.support.server import free_port

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "haproxy.cfg"
START_TIMEOUT_S = 20.0


def haproxy_executable() -> str | None:
    """Debian installs it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


def config_for(port: int, server_ports: list[int], admin_socket: Path) -> str:
    """The shipped configuration with the test's addresses and an admin socket."""
    text = SHIPPED_CONFIG.read_text()
    text, binds = re.subn(r"(?m)^(\s*bind )\S+", rf"\g<1>127.0.0.1:{port}", text)
    assert binds == 1, "docs/haproxy.cfg should bind one address"
    text = re.sub(r"(?m)^\s*server cirrus\d+ .*\n", "", text)
    servers = "".join(
        f"    server cirrus{i} 127.0.0.1:{p}\n" for i, p in enumerate(server_ports, 1)
    )
    text = text.rstrip("\n") + "\n" + servers
    return text.replace(
        "global\n", f"global\n    stats socket {admin_socket} mode 600 level admin\n", 1
    )


class HAProxy:
    def __init__(self, directory: Path, server_ports: list[int]) -> None:
        self.directory = Path(directory)
        self.server_ports = server_ports
        self.port = free_port()
        self.admin_socket = self.directory / "admin.sock"
        self.config_path = self.directory / "haproxy.cfg"
        self.log_path = self.directory / "haproxy.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HAProxy":
        executable = haproxy_executable()
        if executable is None:
            raise RuntimeError("haproxy is not installed (see .ci/install.sh)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_for(self.port, self.server_ports, self.admin_socket))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [executable, "-db", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited:\n{logs.tail(self.log_path, 30)}")
            if self.admin_socket.exists() and set(self.server_states().values()) == {"UP"}:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"haproxy not ready:\n{logs.tail(self.log_path, 30)}")

    def admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def _server_stats(self) -> dict[str, dict[str, str]]:
        """The `show stat` fields of each server of the backend, by server name."""
        rows = self.admin("show stat").splitlines()
        header = rows[0].lstrip("# ").split(",")
        servers = {}
        for row in rows[1:]:
            fields = dict(zip(header, row.split(","), strict=False))
            if fields.get("pxname") == "cirrus_servers" and fields["svname"].startswith("cirrus"):
                servers[fields["svname"]] = fields
        return servers

    def server_states(self) -> dict[str, str]:
        """Each server's state as the balancer sees it: UP, DOWN, or a transition."""
        return {name: f["status"].split()[0] for name, f in self._server_stats().items()}

    def sessions(self) -> dict[str, int]:
        """Each server's current sessions (requests it holds now, as an idle long poll)."""
        return {name: int(f["scur"] or 0) for name, f in self._server_stats().items()}

    def wait_for_states(self, wanted: dict[str, str], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.server_states()
            if all(states.get(name) == state for name, state in wanted.items()):
                return
            assert time.monotonic() < deadline, f"servers {states}, wanted {wanted}"
            time.sleep(0.1)

    def abnormal_log_lines(self) -> list[str]:
        """Logged requests that did not end normally (termination state other than ----)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if re.search(r" (?!----)[A-Za-z-]{4} \d+/\d+/", line)]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> "HAProxy":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
