"""One of three API servers behind HAProxy is killed (kill -9) in the middle of an untar and
a large write through a mount, while resumable uploads go on through the balancer: the mount
reports no error, every file arrives intact, no resumable session is lost."""

import hashlib
import os
import random
import re
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests import postgres
from tests.support.cluster import running_cluster
from tests.support.haproxy import HAProxy
from tests.support.mount import MountProcess, wait_until
from tests.support.server import ServerProcess
from tests.test_api_uploads import progress, put, start

pytestmark = pytest.mark.postgres
postgres_server = postgres.postgres_server


SESSIONS = 3
SESSION_BYTES = 5 * 1024 * 1024 + 4321
PART = 1024 * 1024
SYNC_TIMEOUT_S = 300


def generated_tree(root: Path, files: int) -> Path:
    """A tar of `files` small files (0-8 KiB, some compressible) in nested folders."""
    rng = random.Random(10)
    source = root / "tree"
    for number in range(files):
        path = source / f"d{number % 37}" / f"e{number % 5}" / f"f{number}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randrange(0, 8192)
        path.write_bytes(rng.randbytes(size // 2) + b"x" * (size - size // 2))
    tar = root / "tree.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(source, arcname="tree")
    return tar


def django_tree(root: Path) -> Path:
    from bench.source_tree import fetch_tarball

    return fetch_tarball(Path.home() / ".cache" / "cirrus-bench")


@pytest.mark.parametrize(
    ("make_tar", "large_mib"),
    [
        pytest.param(lambda root: generated_tree(root, 1000), 48, id="generated"),
        pytest.param(
            django_tree, 256, id="django", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]
        ),
    ],
)
def test_a_server_killed_mid_untar_loses_nothing(
    postgres_server,
    tmp_path: Path,
    make_tar: Callable[[Path], Path],
    large_mib: int,
) -> None:
    tar = make_tar(tmp_path)
    expected = _tar_contents(tar)
    large = os.urandom(large_mib * 1024 * 1024)
    cut = os.urandom(2 * PART)
    expected["/large.bin"] = hashlib.sha256(large).hexdigest()
    db_url = postgres_server.create_database()
    with (
        running_cluster(tmp_path / "cluster", db_url, 3) as servers,
        HAProxy(tmp_path / "lb", [server.port for server in servers]) as balancer,
    ):
        url = balancer.url
        token = servers[1].create_user("alice")
        drive = MountProcess(url, token, tmp_path / "mnt", tmp_path / "cache")
        killed = threading.Event()
        uploads = [ResumableUpload(url, token, n, killed) for n in range(SESSIONS)]
        background = ThreadPoolExecutor(1)
        try:
            drive.mount()
            untar = subprocess.Popen(
                ["tar", "-xf", str(tar), "-C", str(drive.path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            large_write = background.submit((drive.path / "large.bin").write_bytes, large)
            for upload in uploads:
                upload.start()
            # Once the servers hold part of the tree, while the rest is on its way, kill the
            # server that holds a resumable PUT half received.
            with servers[1].client(token) as direct:
                wait_until(lambda: _files(direct) >= len(expected) // 5, timeout=120, step=0.2)
                location = start(direct, "/resumable/cut.bin", 2 * PART)
                assert put(direct, location, 0, PART - 1, cut).status_code == 308
            in_flight = PutInFlight(balancer, token, location, len(cut))
            victim = servers[int(in_flight.server) - 1]
            victim.kill()
            killed.set()
            in_flight.close()
            survivors = [server for server in servers if server is not victim]
            with survivors[0].client(token) as direct:
                # the acknowledged first part is kept, the cut one was never acknowledged
                assert (
                    progress(direct, location, len(cut)).headers["Range"] == f"bytes=0-{PART - 1}"
                )
                assert put(direct, location, PART, 2 * PART - 1, cut).status_code == 201
            _, errors = untar.communicate(timeout=SYNC_TIMEOUT_S)
            large_write.result(SYNC_TIMEOUT_S)  # raises what the mount answered, if it failed
            for upload in uploads:
                upload.join(SYNC_TIMEOUT_S)
            assert untar.returncode == 0 and errors == b"", errors.decode()
            assert [u.failure for u in uploads] == [None] * SESSIONS
            with survivors[0].client(token, timeout=60.0) as direct:
                total = len(expected) + SESSIONS + 1
                wait_until(lambda: _files(direct) >= total, timeout=SYNC_TIMEOUT_S, step=0.5)
            wanted = expected | {u.path: hashlib.sha256(u.data).hexdigest() for u in uploads}
            wanted["/resumable/cut.bin"] = hashlib.sha256(cut).hexdigest()
            assert _digests(survivors, token, sorted(wanted)) == wanted
        finally:
            killed.set()
            for upload in uploads:
                upload.stop.set()
            drive.unmount()
            background.shutdown()
        assert drive.errors_logged() == [], drive.log_tail()


class PutInFlight:
    """A resumable PUT left half-sent on a raw connection through the balancer, and the
    server HAProxy gave it to (found by the connection's source port in `show sess`)."""

    def __init__(self, balancer: HAProxy, token: str, location: str, total: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", balancer.port), timeout=30)
        head = (
            f"PUT {location} HTTP/1.1\r\nHost: cirrus\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Range: bytes {PART}-{2 * PART - 1}/{total}\r\n"
            f"Content-Length: {PART}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + os.urandom(PART // 4))
        source = f"src=127.0.0.1:{self.sock.getsockname()[1]} "
        self.server = wait_until(lambda: _server_of(balancer, source), timeout=10, step=0.05)

    def close(self) -> None:
        self.sock.close()


def _server_of(balancer: HAProxy, source: str) -> str | None:
    """The number (from 1) of the server serving the session from `source`, once chosen."""
    for line in balancer.admin("show sess").splitlines():
        found = re.search(r" srv=cirrus(\d+) ", line)
        if source in line and found:
            return found.group(1)
    return None


def _tar_contents(tar: Path) -> dict[str, str]:
    """Regular files of the tar as drive paths → SHA-256 of their content."""
    with tarfile.open(tar) as archive:
        return {
            f"/{member.name}": hashlib.sha256(archive.extractfile(member).read()).hexdigest()
            for member in archive.getmembers()
            if member.isfile()
        }


def _files(client: httpx.Client) -> int:
    return client.get("/v1/account").raise_for_status().json()["files"]


def _digests(servers: list[ServerProcess], token: str, paths: list[str]) -> dict[str, str]:
    """SHA-256 of each file as the surviving servers serve it, read two at a time on each."""

    def read(share: list[str], server: ServerProcess) -> dict[str, str]:
        with server.client(token, timeout=60.0) as client:
            return {path: _digest(client, path) for path in share}

    shares = [paths[i :: 2 * len(servers)] for i in range(2 * len(servers))]
    with ThreadPoolExecutor(len(shares)) as pool:
        found = pool.map(read, shares, servers * 2)
    return {path: digest for share in found for path, digest in share.items()}


def _digest(client: httpx.Client, path: str) -> str:
    answer = client.get("/v1/files/content", params={"path": path})
    return hashlib.sha256(answer.content).hexdigest() if answer.status_code == 200 else ""


class ResumableUpload(threading.Thread):
    """A resumable upload through the balancer, 1 MiB per PUT, as a careful client does it:
    after a failed PUT (the server died under it) it asks for progress and goes on from there.
    It sends the second half of the file only after the kill. A session that is not found
    any more is a lost session: `failure` says so."""

    def __init__(self, url: str, token: str, number: int, killed: threading.Event) -> None:
        super().__init__(daemon=True)
        self._killed = killed
        self.path = f"/resumable/{number}.bin"
        self.data = os.urandom(SESSION_BYTES)
        self.failure: str | None = None
        self.stop = threading.Event()
        self._client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0,
            trust_env=False,
        )  # fmt: skip

    def run(self) -> None:
        try:
            self.failure = self._upload()
        except Exception as exc:
            self.failure = repr(exc)
        finally:
            self._client.close()

    def _upload(self) -> str | None:
        started = self._retrying(lambda: self._client.post(
            "/v1/files",
            params={"uploadType": "resumable", "path": self.path},
            headers={"X-Upload-Content-Length": str(len(self.data))},
        ))  # fmt: skip
        location = started.json()["location"]
        received = 0
        for _ in range(200):
            if self.stop.is_set():
                return "stopped before the end"
            last = min(received + PART, len(self.data)) - 1
            answer = self._put(location, received, last)
            if answer is None:  # the PUT died with its server: where do we stand?
                answer = self._retrying(lambda: self._progress(location))
            if answer.status_code == 201:
                return None
            if answer.status_code != 308:
                return f"HTTP {answer.status_code}: {answer.text}"
            received = int(answer.headers["Range"].rsplit("-", 1)[1]) + 1
            if received >= len(self.data) // 2:  # the rest after the kill
                self._killed.wait(120)
        return "not finished after 200 PUTs"

    def _put(self, location: str, first: int, last: int) -> httpx.Response | None:
        try:
            answer = self._client.put(
                location,
                content=self.data[first : last + 1],
                headers={"Content-Range": f"bytes {first}-{last}/{len(self.data)}"},
            )
        except httpx.TransportError:
            return None
        return None if answer.status_code >= 500 else answer

    def _progress(self, location: str) -> httpx.Response:
        headers = {"Content-Range": f"bytes */{len(self.data)}"}
        return self._client.put(location, headers=headers)

    def _retrying(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        """Send until an answer that is not the balancer's 5xx (bounded: 60 tries)."""
        for _ in range(60):
            try:
                answer = send()
                if answer.status_code < 500:
                    return answer
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("no server answered for 30 s")
