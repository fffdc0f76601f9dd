"""Several real `cirrus serve` processes as one service: one database, one block store, one key.

    with running_cluster(tmp_path, postgres_server.create_database(), 3) as servers:
        token = servers[0].create_user("alice")   # any server serves every user

Every server is stopped on exit, even when the test fails; a server that logged a traceback
fails the test afterwards.
"""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.server import ServerProcess


def shared_args(root: Path) -> tuple[str, ...]:
    """The options every server of one cluster shares: the master key and the block store."""
    key = root / "master.key"
    if not key.exists():
        root.mkdir(parents=True, exist_ok=True)
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
    return ("--key-file", str(key), "--blocks", str(root / "blocks"))


@contextmanager
def running_cluster(
    root: Path, db_url: str, count: int, extra_args: tuple[str, ...] = ()
) -> Iterator[list[ServerProcess]]:
    args = (*shared_args(root), *extra_args)
    servers = [ServerProcess(root / f"server{i}", db_url, args) for i in range(count)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert server.errors_logged() == [], server.log_tail(80)
