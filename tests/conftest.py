"""Fixtures for the whole suite: real server processes, and the slow-test switch."""

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.slow import runslow

if TYPE_CHECKING:
    from tests.support.s3 import MotoServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


# A long run takes longer than the suite's per-test timeout (pyproject.toml), never forever.
SLOW_TIMEOUT_S = 7200


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A `slow` test is skipped before any fixture starts unless long runs were asked for;
    when they were, it gets SLOW_TIMEOUT_S unless it states its own timeout."""
    skip = pytest.mark.skip(reason="long run: use --runslow or CIRRUS_RUNSLOW=1")
    for item in items:
        if not item.get_closest_marker("slow"):
            continue
        if not runslow(config):
            item.add_marker(skip)
        elif not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def _run_server(data_dir: Path, extra_args: tuple[str, ...] = ()) -> Iterator[ServerProcess]:
    """Start a server; always stop it; fail the test if the server logged a traceback."""
    server = ServerProcess(data_dir, extra_args=extra_args)
    try:
        server.start()
        yield server
    finally:
        server.stop()
    errors = server.errors_logged()
    if errors:
        pytest.fail(f"the server logged {len(errors)} error(s):\n{server.log_tail(80)}")


# The `server` and `shared_server` fixtures keep blocks in S3 (a fresh bucket of the session's
# moto server), so every run takes the whole server and mount suite through the S3 store;
# CIRRUS_TEST_BLOCKS=local puts them in DATA/blocks instead. Local stores keep their own
# coverage: the block store contract suite (test_blockstore.py), these modules, which look
# at the block directory themselves, and the tests that start servers with their own --blocks.
LOCAL_BLOCKS = {"test_gc.py", "test_fsck.py"}


@pytest.fixture(scope="module")
def block_store(request: pytest.FixtureRequest) -> str:
    """Where the `server` and `shared_server` fixtures keep blocks: "s3" or "local"."""
    if request.path.name in LOCAL_BLOCKS:
        return "local"
    return "local" if os.environ.get("CIRRUS_TEST_BLOCKS") == "local" else "s3"


def _blocks_args(request: pytest.FixtureRequest, block_store: str) -> tuple[str, ...]:
    """`--blocks` on a fresh bucket of the session's moto server for block_store "s3"."""
    if block_store != "s3":
        return ()
    moto = request.getfixturevalue("moto")
    bucket = f"cirrus-{secrets.token_hex(6)}"
    moto.create_bucket(bucket)
    return ("--blocks", moto.store_url(bucket))


@pytest.fixture
def server(
    tmp_path: Path, request: pytest.FixtureRequest, block_store: str
) -> Iterator[ServerProcess]:
    """A fresh `cirrus serve` on an empty data directory, for one test."""
    yield from _run_server(tmp_path / "server", _blocks_args(request, block_store))


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, block_store: str
) -> Iterator[ServerProcess]:
    """One server for a whole module, for tests that isolate themselves by user."""
    data = tmp_path_factory.mktemp("shared") / "server"
    yield from _run_server(data, _blocks_args(request, block_store))


@pytest.fixture
def new_user(shared_server: ServerProcess) -> Iterator[Callable[..., httpx.Client]]:
    """Make a new user of the shared server and return an API client for them (closed after).

    new_user() or new_user(device="laptop"); each call is a separate user with an empty drive.
    """
    clients: list[httpx.Client] = []

    def make(device: str | None = None) -> httpx.Client:
        token = shared_server.add_user(f"user-{secrets.token_hex(6)}")
        clients.append(shared_server.client(token, device=device))
        return clients[-1]

    try:
        yield make
    finally:
        for client in clients:
            client.close()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator["MotoServer"]:
    """One moto S3 server for the session (tests take a fresh bucket each), with dummy
    credentials in the environment; always stopped."""
    from tests.support.s3 import MotoServer, s3_credentials

    with s3_credentials(), MotoServer(tmp_path_factory.mktemp("moto") / "moto.log") as s3:
        yield s3


@pytest.fixture
def s3_bucket(moto: "MotoServer") -> str:
    """A fresh, empty bucket on the session's moto server."""
    bucket = f"cirrus-{secrets.token_hex(6)}"
    moto.create_bucket(bucket)
    return bucket
