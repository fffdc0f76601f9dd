"""A batch the server applied whose answer never reached the mount: the retry keeps the
journal's order.

A relay on 127.0.0.1 between the mount and a real server forwards everything, except that
once armed it closes the connection that carried a marked request instead of passing the
server's answer on (the server applied the batch, the mount never learns it), then refuses
connections until the test lets it go on: a dropped answer and an outage, for real.
"""

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.support.mount import MountProcess, server_stat, wait_until
from tests.support.server import ServerProcess

NOBODY = 65534


class AnswerDropper:
    """A TCP relay to `port` that can drop the answer to one marked request."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._marker: bytes | None = None
        self._down = threading.Event()
        self.dropped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def arm(self, marker: bytes) -> None:
        """Drop the answer to the next request containing `marker`, then stay down."""
        self._marker = marker

    def resume(self) -> None:
        self._down.clear()

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self._port))
            with self._lock:
                self._sockets += [client, server]
            marked = threading.Event()
            threading.Thread(
                target=self._requests, args=(client, server, marked), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(server, client, marked), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, marked: threading.Event
    ) -> None:
        tail = b""
        while data := _recv(client):
            if self._down.is_set():
                break
            marker = self._marker
            if marker is not None and marker in tail + data:
                self._marker = None
                marked.set()
            tail = (tail + data)[-256:]
            server.sendall(data)
        _close(client, server)

    def _answers(
        self, server: socket.socket, client: socket.socket, marked: threading.Event
    ) -> None:
        while data := _recv(server):
            if marked.is_set():
                self._down.set()
                self.dropped.set()
                break
            client.sendall(data)
        _close(client, server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@contextmanager
def relay_to(server: ServerProcess) -> Iterator[AnswerDropper]:
    relay = AnswerDropper(int(server.url.rsplit(":", 1)[1]))
    relay.start()
    try:
        yield relay
    finally:
        relay.close()


def test_a_chown_carried_by_a_retried_mkdir_is_applied_before_a_later_rename(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    """mkdir p/d goes out and its answer is lost; chown p/d and mv p q follow while the
    server is out of reach. The retry carries the chown with the mkdir, which now finds the
    folder there (it keeps its attributes): the chown must still reach the server before the
    rename, or it is refused for a path that no longer exists and lost."""
    token = shared_server.add_user("lost-answer")
    with (
        relay_to(shared_server) as relay,
        MountProcess(relay.url, token, tmp_path / "mnt", tmp_path / "cache") as mount,
    ):
        root = mount.path
        (root / "p").mkdir()
        wait_until(lambda: server_stat(shared_server, token, "/p"), 15)
        relay.arm(b'"/p/d"')
        (root / "p" / "d").mkdir()
        assert relay.dropped.wait(15), "the mkdir's batch never went out"
        os.chown(root / "p" / "d", NOBODY, NOBODY)
        os.rename(root / "p", root / "q")
        relay.resume()

        def owner() -> tuple | None:
            node = server_stat(shared_server, token, "/q/d")
            return node and (node.get("uid"), node.get("gid"))

        wait_until(lambda: owner() == (NOBODY, NOBODY), 20)
        assert os.stat(root / "q" / "d").st_uid == NOBODY
