"""A real HAProxy in front of test servers, on a free 127.0.0.1 port, always stopped.

    with running_haproxy(tmp_path, servers) as url:     # http://127.0.0.1:PORT
        ...                                             # any server may die meanwhile

The configuration is the one an operator would use (health checks on /v1/health, long-poll
timeouts, reads retried on another server after a failed connection) with checks every
half second, so a killed server leaves the rotation within a second or two.
"""

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, free_port

START_TIMEOUT_S = 15.0

_CONFIG = """\
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout queue 30s
    timeout client 330s
    timeout server 330s
    retries 3
    option redispatch 1

frontend cirrus
    bind 127.0.0.1:{port}
    default_backend cirrus_servers

backend cirrus_servers
    balance leastconn
    option httpchk
    http-check send meth GET uri /v1/health ver HTTP/1.1 hdr Host cirrus
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
    retry-on conn-failure empty-response
    http-request disable-l7-retry if !METH_GET !METH_HEAD
{servers}
"""


def haproxy_config(port: int, servers: Sequence[ServerProcess]) -> str:
    lines = (f"    server s{i} 127.0.0.1:{s.port}" for i, s in enumerate(servers))
    return _CONFIG.format(port=port, servers="\n".join(lines))


@contextmanager
def running_haproxy(directory: Path, servers: Sequence[ServerProcess]) -> Iterator[str]:
    """Start HAProxy in front of the (started) servers; yield its URL; stop it on exit."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("HAProxy is not installed (see .ci/install.sh)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(port, servers))
    with open(directory / "haproxy.log", "ab") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_ready(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"haproxy not ready after {START_TIMEOUT_S}s")
