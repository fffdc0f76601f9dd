"""Several real `cirrus serve` processes as one service: one database, one block store, one key.

    with running_cluster(tmp_path, postgres_server.create_database(), 3) as servers:
        token = servers[0].create_user("alice")   # any server serves every user

Each server reaches the shared block folder through a link of its own (`server_blocks`), so
a test can cut one server off its store. Every server is stopped on exit, even when the test
fails; a server that logged a traceback fails the test afterwards.
"""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.server import ServerProcess


def shared_key(root: Path) -> Path:
    """The master key file of the servers under root (made at the first call)."""
    key = root / "master.key"
    if not key.exists():
        root.mkdir(parents=True, exist_ok=True)
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
    return key


def shared_args(root: Path) -> tuple[str, ...]:
    """The options every server of one cluster shares: the master key and the block store."""
    return ("--key-file", str(shared_key(root)), "--blocks", str(root / "blocks"))


def server_blocks(root: Path, index: int) -> Path:
    """The link through which server number index reaches the shared block folder."""
    return root / f"blocks-via-{index}"


@contextmanager
def running_cluster(
    root: Path, db_url: str, count: int, extra_args: tuple[str, ...] = ()
) -> Iterator[list[ServerProcess]]:
    key_args = ("--key-file", str(shared_key(root)))
    (root / "blocks").mkdir(exist_ok=True)
    servers = []
    for index in range(count):
        link = server_blocks(root, index)
        link.symlink_to(root / "blocks")
        args = (*key_args, "--blocks", str(link), *extra_args)
        servers.append(ServerProcess(root / f"server{index}", db_url, args))
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert server.errors_logged() == [], server.log_tail(80)
