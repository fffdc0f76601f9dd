"""Helpers for tests that crash a mount under an open file and look at what came back."""

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from tests.support.lifecycle import history
from tests.support.mount import MountProcess
from tests.support.server import ServerProcess


def close_quietly(fd: int) -> None:
    """Close a descriptor of a mount that may have been killed under it."""
    with contextlib.suppress(OSError):
        os.close(fd)


def crash_while_open(
    drive: MountProcess,
    path: Path,
    flags: int,
    work: Callable[[int], None],
    mode: int = 0o644,
) -> None:
    """Open (or create with `mode`) `path` on a mount whose server is away, do `work` with the
    descriptor, kill -9 the mount under it; then mount again (the caller starts the server)."""
    fd = os.open(path, flags | os.O_CREAT, mode)
    try:
        work(fd)
        drive.kill9()
    finally:
        close_quietly(fd)


def revisions(server: ServerProcess, token: str, path: str) -> list[dict]:
    """A drive file's revisions as the server lists them, newest first."""
    with server.client(token) as client:
        return history(client, path, limit=1000)["revisions"]
