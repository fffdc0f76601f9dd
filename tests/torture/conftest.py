"""Fixtures of the torture tests: the drive a workload runs on, and the slow-test switch.

Long versions are marked `slow` and run only with `--runslow` (when the top-level conftest
defines it) or CIRRUS_RUNSLOW=1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .drives import Drive, LocalDrive, wanted_target


def runslow(config: pytest.Config) -> bool:
    return bool(config.getoption("--runslow", default=False) or os.environ.get("CIRRUS_RUNSLOW"))


@pytest.fixture(autouse=True)
def _skip_slow(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slow") and not runslow(request.config):
        pytest.skip("long torture run: use --runslow or CIRRUS_RUNSLOW=1")


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Drive]:
    """A fresh drive: a real `cirrus serve` + `cirrus mount`, or a local directory."""
    if wanted_target() == "local":
        local = LocalDrive(tmp_path / "drive")
        yield local
        local.close()
        return
    pytest.skip("the mount fixtures are not available yet")


@pytest.fixture
def drive_pair(tmp_path: Path) -> Iterator[tuple[Drive, Drive]]:
    """Two mounts (two devices, two cache directories) of one user's drive on one server."""
    if wanted_target() == "local":
        pair = (LocalDrive(tmp_path / "first"), LocalDrive(tmp_path / "second"))
        yield pair
        for local in pair:
            local.close()
        return
    pytest.skip("the mount fixtures are not available yet")
