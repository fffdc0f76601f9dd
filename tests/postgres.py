"""A throwaway PostgreSQL cluster for tests, started from Debian's binaries, and fixtures.

One cluster serves a whole test session (starting one takes a few seconds); each test that
wants isolation asks for a fresh database in it with `PostgresServer.create_database()`.
The cluster listens on 127.0.0.1 at a free port with its socket in its own temporary
directory, runs as the `postgres` system user when the tests run as root (PostgreSQL refuses
to run as root) and is always stopped and removed, even when tests fail.

Fixtures (bind them in a test module, e.g. `postgres_server = postgres.postgres_server`):
- postgres_server: the session's cluster; skips when PostgreSQL is not installed.
- database_url: an empty database, parametrized over a SQLite file and PostgreSQL.
- migrated_engine: an engine on database_url with the schema migrated.
- notifier, metadata: a recording Notifier and a MetadataService on migrated_engine;
  metadata checks the database's consistency after the test.
- replicated_postgres: a fresh primary with a synchronous streaming replica (pg_basebackup)
  for one test, reached through a multi-host URL; the test may crash the primary and
  promote the replica.
"""

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine

from backend.db import create_engine_for, migrate
from backend.metadata.consistency import find_problems
from backend.metadata.service import MetadataService
from backend.metadata.types import Principal

START_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None when none is installed."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        dsn = f"host={self.host} port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _runner() -> tuple[list[str], str]:
    """The command prefix that runs the server binaries, and the database superuser."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"], "postgres"
    return [], pwd.getpwuid(os.geteuid()).pw_name


@contextmanager
def running_postgres(bindir: Path) -> Iterator[PostgresServer]:
    """Start a fresh cluster in a temporary directory; stop and remove it on exit."""
    user = _runner()[1]
    tmp = Path(tempfile.mkdtemp(prefix="cirrus-pg-"))
    data = tmp / "data"
    try:
        _initdb(bindir, tmp, data)
        port = _start(bindir, data, tmp)
        try:
            yield PostgresServer("127.0.0.1", port, user)
        finally:
            _stop(bindir, data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _initdb(bindir: Path, tmp: Path, data: Path) -> None:
    """A new cluster in data (tmp made the server user's when the tests run as root)."""
    prefix, user = _runner()
    if prefix:
        shutil.chown(tmp, "postgres", "postgres")
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust"],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT_S,
    )


def _start(bindir: Path, data: Path, tmp: Path, options: str = "") -> int:
    """Start the cluster in data on a free port (its socket and log in tmp); return the port."""
    port = _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={tmp}"
        f" -c fsync=off -c full_page_writes=off -c max_connections=200 {options}"
    )
    subprocess.run(
        [*_runner()[0], str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w",
         "-t", str(START_TIMEOUT_S), "-l", str(tmp / f"{data.name}.log"), "start"],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT_S + 10,
    )  # fmt: skip
    return port


def _stop(bindir: Path, data: Path) -> None:
    """Stop the cluster at once, as a crash would (no shutdown checkpoint)."""
    subprocess.run(
        [*_runner()[0], str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
        capture_output=True,
        timeout=START_TIMEOUT_S,
    )


class _SharedCluster:
    """One cluster for the whole process, however many modules import the fixture.

    A fixture imported into several test modules is a separate fixture in each, so a plain
    session fixture would start one cluster per module. Each of them takes a reference
    here instead; the first starts the cluster and the last, at session end, stops it.
    """

    def __init__(self) -> None:
        self._stack: ExitStack | None = None
        self._server: PostgresServer | None = None
        self._users = 0

    @contextmanager
    def use(self, bindir: Path) -> Iterator[PostgresServer]:
        if self._users == 0:
            stack = ExitStack()
            self._server = stack.enter_context(running_postgres(bindir))
            self._stack = stack
        self._users += 1
        try:
            yield self._server
        finally:
            self._users -= 1
            if self._users == 0:
                stack, self._stack, self._server = self._stack, None, None
                stack.close()


_CLUSTER = _SharedCluster()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole test session (skips when none is installed)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb; see .ci/install.sh)")
    with _CLUSTER.use(bindir) as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cirrus.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on an empty database (SQLite and PostgreSQL) with the schema migrated."""
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


class RecordingNotifier:
    """A Notifier that remembers every publish, for asserting what was announced."""

    def __init__(self) -> None:
        self.published: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def publish(self, namespace_id: int, cursor: int) -> None:
        with self._lock:
            self.published.append((namespace_id, cursor))


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def metadata(migrated_engine: Engine, notifier: RecordingNotifier) -> Iterator[MetadataService]:
    """The metadata service on a fresh database, once per database kind. After the test,
    the database must pass the consistency check (the oracle for every metadata test)."""
    yield MetadataService(migrated_engine, notifier)
    assert find_problems(migrated_engine) == []


@pytest.fixture
def alice(metadata: MetadataService) -> Principal:
    """A user with a device, the principal most metadata tests act as."""
    return metadata.authenticate(metadata.create_user("alice"), "laptop")


@dataclass
class ReplicatedPostgres:
    """A primary and a streaming replica (pg_basebackup) that is its synchronous standby:
    the primary acknowledges a commit only once the replica has it. Servers reach the pair
    with `url()`, a libpq multi-host URL that only accepts the read-write one."""

    primary: PostgresServer
    replica: PostgresServer
    _bindir: Path
    _primary_data: Path
    _replica_data: Path

    def url(self, database: str = "postgres") -> str:
        hosts = "&".join(f"host={s.host}:{s.port}" for s in (self.primary, self.replica))
        return (
            f"postgresql+psycopg://{self.primary.user}@/{database}?{hosts}"
            "&target_session_attrs=read-write&connect_timeout=2"
        )

    def create_database(self) -> str:
        """An empty database (made on the primary, streamed to the replica): its multi-host URL."""
        url = self.primary.create_database()
        return self.url(url.rsplit("/", 1)[1])

    def stop_primary(self) -> None:
        """Crash the primary (immediate stop: no shutdown checkpoint, connections cut)."""
        _stop(self._bindir, self._primary_data)

    def promote_replica(self) -> None:
        """Make the replica the read-write primary; return once it accepts writes."""
        subprocess.run(
            [*_runner()[0], str(self._bindir / "pg_ctl"), "-D", str(self._replica_data),
             "-w", "-t", str(START_TIMEOUT_S), "promote"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S + 10,
        )  # fmt: skip

    def is_synchronous(self) -> bool:
        """True when the primary sees the replica streaming as its synchronous standby."""
        dsn = f"host={self.primary.host} port={self.primary.port} user={self.primary.user}"
        with psycopg.connect(f"{dsn} dbname=postgres", autocommit=True) as conn:
            states = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
        return states == [("sync",)]


@contextmanager
def running_replicated_postgres(bindir: Path) -> Iterator[ReplicatedPostgres]:
    """A primary with a synchronous streaming replica, both in one temporary directory; both
    stopped and removed on exit. The promoted replica waits for no standby (it has none)."""
    prefix, user = _runner()
    tmp = Path(tempfile.mkdtemp(prefix="cirrus-pg-"))
    primary_data, replica_data = tmp / "data", tmp / "replica"
    try:
        _initdb(bindir, tmp, primary_data)
        port = _start(bindir, primary_data, tmp, "-c synchronous_standby_names='*'")
        primary = PostgresServer("127.0.0.1", port, user)
        try:
            subprocess.run(
                [*prefix, str(bindir / "pg_basebackup"), "-D", str(replica_data), "-h",
                 primary.host, "-p", str(port), "-U", user, "-X", "stream", "-R",
                 "--checkpoint=fast"],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT_S,
            )  # fmt: skip
            replica_port = _start(bindir, replica_data, tmp, "-c synchronous_standby_names=''")
            try:
                pair = ReplicatedPostgres(
                    primary, PostgresServer("127.0.0.1", replica_port, user),
                    bindir, primary_data, replica_data,
                )  # fmt: skip
                _wait_synchronous(pair)
                yield pair
            finally:
                _stop(bindir, replica_data)
        finally:
            _stop(bindir, primary_data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_synchronous(pair: ReplicatedPostgres) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not pair.is_synchronous():
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not become a synchronous standby")
        time.sleep(0.1)


@pytest.fixture
def replicated_postgres() -> Iterator[ReplicatedPostgres]:
    """A fresh primary + synchronous replica for one test (failover tests destroy it)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb; see .ci/install.sh)")
    with running_replicated_postgres(bindir) as pair:
        yield pair
