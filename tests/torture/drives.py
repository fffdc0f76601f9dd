"""The place a torture workload runs: a real Cirrus mount, or a plain local directory.

The local kind exists so the workloads and their models can be checked on their own (a model
test of a local directory against a local directory must never fail); it is chosen with
CIRRUS_TORTURE_TARGET=local. Everything about a real drive (restarts, kills, the server's copy)
is reached through this one interface, so the tests do not depend on how the fixtures that
start `cirrus serve` and `cirrus mount` are spelled.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from .harness import ServerView


class Drive(Protocol):
    """A directory tree under test, with the controls a torture test needs."""

    root: Path  # where the workload runs
    view: ServerView | None  # the server's copy of the drive, None for a local directory

    def remount(self) -> None:
        """Unmount cleanly and mount again with the same cache directory."""

    def kill_mount(self) -> None:
        """SIGKILL the mount process (the mount point is cleaned up, the cache is kept)."""

    def start_mount(self) -> None:
        """Mount again after kill_mount, with the same cache directory."""

    def kill_server(self) -> None:
        """SIGKILL the server process (its data directory is kept)."""

    def stop_server(self) -> None:
        """Stop the server gracefully."""

    def start_server(self) -> None:
        """Start the server again on the same data directory and address."""


class LocalDrive:
    """A plain directory standing in for a mount: restarts are no-ops, there is no server."""

    view: ServerView | None = None

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def remount(self) -> None:
        pass

    def kill_mount(self) -> None:
        pass

    def start_mount(self) -> None:
        pass

    def kill_server(self) -> None:
        pass

    def stop_server(self) -> None:
        pass

    def start_server(self) -> None:
        pass

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def wanted_target() -> str:
    """'mount' (the default) or 'local', from CIRRUS_TORTURE_TARGET."""
    target = os.environ.get("CIRRUS_TORTURE_TARGET", "mount")
    if target not in ("mount", "local"):
        raise ValueError(f"CIRRUS_TORTURE_TARGET must be 'mount' or 'local', not {target!r}")
    return target


class MountDrive:
    """A real `cirrus mount` of one user's drive on a real `cirrus serve`.

    `mount` is a tests.support.mount.MountProcess, `server` the ServerProcess it talks to;
    a restarted server keeps its address, since the mount knows only that."""

    def __init__(self, server: Any, mount: Any, token: str) -> None:
        self.server = server
        self.mount = mount
        self.view = ServerView(server.url, token)

    @property
    def root(self) -> Path:
        return Path(self.mount.path)

    def remount(self) -> None:
        self.mount.unmount()
        self.mount.mount()

    def kill_mount(self) -> None:
        self.mount.kill9()

    def start_mount(self) -> None:
        self.mount.mount()

    def kill_server(self) -> None:
        self.server.kill()

    def stop_server(self) -> None:
        self.server.stop()

    def start_server(self) -> None:
        self.server.start()
        assert self.server.url == self.view.url, "the server came back on another address"
