"""Notifications across servers: PostgreSQL LISTEN/NOTIFY on the metadata database itself.

Every server of a drive listens on one channel. A commit's publish wakes this server's polls
at once (LocalNotifier) and is queued for a sender thread, which sends what piled up as one
`pg_notify` per 7,900 bytes of payload on its own connection: `"<namespace>:<cursor> ..."`,
the newest cursor per namespace. A listener thread feeds every payload it hears into the
in-memory cursors, which wakes the polls waiting on those namespaces; a server hears its own
notifications too and ignores them (a cursor never moves back).

PostgreSQL queues nothing for a listener that is not connected. So when the listener loses
its connection it reconnects (backing off to 2 s), listens again, and then `resync`s: every
cached cursor is forgotten and every waiting poll answered, so clients poll again and the
next poll of each namespace reads the journal's cursor, catching up on what was missed.
A listener that stops hearing from the server is noticed by a query every few seconds and
by TCP keepalives.
"""

import logging
import os
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import Engine

from backend.notify import LocalNotifier

log = logging.getLogger(__name__)

CHANNEL = "cirrus_changes"
MAX_PAYLOAD = 7900  # bytes; PostgreSQL refuses a payload of 8,000 or more
LIVENESS_S = 5.0  # a quiet listener checks its connection this often
RECEIVE_SLICE_S = 0.5  # the listener looks at the stop flag this often
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 2.0
START_TIMEOUT_S = 10.0
LISTENER_NAME = "cirrus-listen"  # application_name of the listener: NAME-PID
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3, "connect_timeout": 5}  # fmt: skip

Connect = Callable[[str], psycopg.Connection]


def connector(engine: Engine) -> Connect:
    """Open autocommit connections to the engine's database (same host list, user and
    options as the engine's own), named for pg_stat_activity."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params = {k: v for k, v in params.items() if k != "context"} | _KEEPALIVE

    def connect(name: str) -> psycopg.Connection:
        return psycopg.connect(**params, application_name=name, autocommit=True)

    return connect


def encode(cursors: dict[int, int]) -> list[str]:
    """Payloads of at most MAX_PAYLOAD bytes carrying every namespace's cursor."""
    payloads: list[str] = []
    parts: list[str] = []
    size = 0
    for namespace_id, cursor in cursors.items():
        part = f"{namespace_id}:{cursor}"
        if parts and size + len(part) + 1 > MAX_PAYLOAD:
            payloads.append(" ".join(parts))
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        payloads.append(" ".join(parts))
    return payloads


def decode(payload: str) -> list[tuple[int, int]]:
    """(namespace, cursor) pairs of a payload; anything malformed is skipped."""
    pairs = []
    for part in payload.split():
        namespace_id, _, cursor = part.partition(":")
        if namespace_id.isdigit() and cursor.isdigit():
            pairs.append((int(namespace_id), int(cursor)))
    return pairs


class PgNotifier(LocalNotifier):
    """LocalNotifier whose publishes reach every server listening on the same database."""

    def __init__(self, load_cursor: Callable[[int], int], connect: Connect) -> None:
        super().__init__(load_cursor)
        self._connect = connect
        self._outbox: dict[int, int] = {}  # namespace -> newest cursor not yet sent
        self._outbox_changed = threading.Condition()
        self._stop = threading.Event()
        self._listening = threading.Event()  # set while LISTEN is in effect
        self._threads = [
            threading.Thread(target=self._listen_forever, name="cirrus-listen", daemon=True),
            threading.Thread(target=self._send_forever, name="cirrus-notify", daemon=True),
        ]

    def start(self) -> None:
        """Start listening; raise if the first LISTEN is not in effect within a few seconds."""
        for thread in self._threads:
            thread.start()
        if not self._listening.wait(START_TIMEOUT_S):
            self.close()
            raise RuntimeError("cannot LISTEN for notifications on the metadata database")

    def close(self) -> None:
        """Send what is queued, then stop both threads."""
        self._stop.set()
        with self._outbox_changed:
            self._outbox_changed.notify()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(RECEIVE_SLICE_S + 2)

    def publish(self, namespace_id: int, cursor: int) -> None:
        super().publish(namespace_id, cursor)
        with self._outbox_changed:
            if cursor > self._outbox.get(namespace_id, -1):
                self._outbox[namespace_id] = cursor
                self._outbox_changed.notify()

    def _heard(self, payload: str) -> None:
        for namespace_id, cursor in decode(payload):
            super().publish(namespace_id, cursor)  # local only: not sent back to the bus

    def _listen_forever(self) -> None:
        delay = RETRY_FIRST_S
        connected_before = False
        while not self._stop.is_set():
            try:
                with self._connect(f"{LISTENER_NAME}-{os.getpid()}") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if connected_before:
                        log.info("notification listener reconnected; polls re-read the journal")
                        self.resync()
                    connected_before = True
                    delay = RETRY_FIRST_S
                    self._listening.set()
                    self._receive(conn)
            except psycopg.Error as exc:
                self._listening.clear()
                if not self._stop.is_set():
                    log.warning("notification listener lost its connection: %s", _line(exc))
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _receive(self, conn: psycopg.Connection) -> None:
        quiet = 0.0
        while not self._stop.is_set():
            heard = False
            for notification in conn.notifies(timeout=RECEIVE_SLICE_S):
                self._heard(notification.payload)
                heard = True
            quiet = 0.0 if heard else quiet + RECEIVE_SLICE_S
            if quiet >= LIVENESS_S:
                conn.execute("SELECT 1")  # raises on a connection that died silently
                quiet = 0.0

    def _send_forever(self) -> None:
        conn: psycopg.Connection | None = None
        delay = RETRY_FIRST_S
        while True:
            with self._outbox_changed:
                while not self._outbox and not self._stop.is_set():
                    self._outbox_changed.wait()
                if not self._outbox:
                    break
                batch, self._outbox = self._outbox, {}
            try:
                conn = conn or self._connect(f"cirrus-notify-{os.getpid()}")
                with conn.transaction():  # delivered together, at commit
                    for payload in encode(batch):
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                delay = RETRY_FIRST_S
            except psycopg.Error as exc:
                log.warning("cannot send notifications: %s", _line(exc))
                conn = _discard(conn)
                self._requeue(batch)
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, RETRY_MAX_S)
        _discard(conn)

    def _requeue(self, batch: dict[int, int]) -> None:
        with self._outbox_changed:
            for namespace_id, cursor in batch.items():
                if cursor > self._outbox.get(namespace_id, -1):
                    self._outbox[namespace_id] = cursor


def _discard(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        conn.close()


def _line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def notifier_for(engine: Engine, load_cursor: Callable[[int], int]) -> LocalNotifier:
    """A started PgNotifier on PostgreSQL; a LocalNotifier on SQLite (one server per file)."""
    if engine.dialect.name != "postgresql":
        return LocalNotifier(load_cursor)
    notifier = PgNotifier(load_cursor, connector(engine))
    notifier.start()
    return notifier
