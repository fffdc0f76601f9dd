"""Tools for tests that play a hostile client: raw sockets and the server's memory.

peak = memory_kib(server.process.pid)["VmHWM"]       # resident memory, from /proc
with raw_connection(server.port) as sock: ...        # a socket that is always closed
"""

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

SOCKET_TIMEOUT_S = 30.0


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident memory) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


@contextlib.contextmanager
def raw_connection(port: int, timeout: float = SOCKET_TIMEOUT_S) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def send_until_refused(sock: socket.socket, head: bytes, body_bytes: int) -> bytes:
    """Send a request head, then up to body_bytes of body while the server keeps reading;
    return what the server answered (empty if it answered nothing)."""
    piece = b" " * (256 * 1024)
    try:
        sock.sendall(head)
        sent = 0
        while sent < body_bytes:
            sent += sock.send(piece[: body_bytes - sent])
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or a timeout)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes the connection, None if it is still open after."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start
