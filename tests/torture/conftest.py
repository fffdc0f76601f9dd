"""Fixtures of the torture tests: the drive a workload runs on, and the slow-test switch.

Long versions are marked `slow` and run only with `--runslow` or CIRRUS_RUNSLOW=1 (the
top-level conftest skips them otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mount import drive_user, mount_factory

from .drives import Drive, LocalDrive, MountDrive, wanted_target

__all__ = ["drive_user", "mount_factory"]  # fixtures the mount drives are made with


def mount_drives(request: pytest.FixtureRequest, count: int) -> list[Drive]:
    """`count` mounts of one fresh user's drive, each with its own cache directory; the
    mount fixtures unmount them (and stop the server) after the test, whatever happens."""
    make = request.getfixturevalue("mount_factory")
    server = request.getfixturevalue("server")
    token = request.getfixturevalue("drive_user")
    return [MountDrive(server, make(f"torture{i}"), token) for i in range(count)]


@pytest.fixture
def drive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Drive]:
    """A fresh drive: a real `cirrus serve` + `cirrus mount`, or a local directory."""
    if wanted_target() == "mount":
        yield mount_drives(request, 1)[0]
        return
    local = LocalDrive(tmp_path / "drive")
    yield local
    local.close()


@pytest.fixture
def drive_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Drive, Drive]]:
    """Two mounts (two cache directories) of one user's drive on one server."""
    if wanted_target() == "mount":
        first, second = mount_drives(request, 2)
        yield first, second
        return
    pair = (LocalDrive(tmp_path / "first"), LocalDrive(tmp_path / "second"))
    yield pair
    for local in pair:
        local.close()
