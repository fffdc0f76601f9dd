"""Helpers for tests that crash a mount under an open file and look at what came back."""

import contextlib
import os

from tests.support.lifecycle import history
from tests.support.server import ServerProcess


def close_quietly(fd: int) -> None:
    """Close a descriptor of a mount that may have been killed under it."""
    with contextlib.suppress(OSError):
        os.close(fd)


def revisions(server: ServerProcess, token: str, path: str) -> list[dict]:
    """A drive file's revisions as the server lists them, newest first."""
    with server.client(token) as client:
        return history(client, path, limit=1000)["revisions"]
