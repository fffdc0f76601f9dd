"""The notification hub behind the long poll: who is waiting for which namespace to move on.

The metadata service publishes a namespace's new journal cursor after every commit, from a
worker thread; long polls wait on the event loop for the cursor to pass theirs. Waiting costs
no thread and no polling: each namespace with waiters has one asyncio.Event that a publish
sets, and the latest cursor per namespace is kept in memory, so an idle poll never touches the
database after its first look.

LocalNotifier only hears commits made in this process. Several API servers behind a load
balancer share a bus instead: PgNotifier (backend/notify_pg.py) extends this class, sends
each publish over PostgreSQL NOTIFY and feeds what it hears into the same in-memory cursors;
when it may have missed something it calls `resync`.
"""

import asyncio
import threading
from collections.abc import Callable
from typing import Protocol

import anyio.to_thread


class ChangeWaiter(Protocol):
    async def wait(self, namespace_id: int, after_cursor: int, timeout: float) -> int:
        """Return the namespace's cursor once it exceeds after_cursor, or when timeout passes."""
        ...


class _Channel:
    """The waiters of one namespace; dropped when the last waiter leaves."""

    __slots__ = ("event", "waiters")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiters = 0


class LocalNotifier:
    """In-process pub/sub: publish from any thread, wait on the event loop."""

    def __init__(self, load_cursor: Callable[[int], int]) -> None:
        self._load_cursor = load_cursor  # reads the journal's cursor; called once per namespace
        self._lock = threading.Lock()  # guards _cursors (written by worker threads)
        self._cursors: dict[int, int] = {}
        self._channels: dict[int, _Channel] = {}  # touched on the event loop only
        self._loading: dict[int, asyncio.Future[int]] = {}  # one cursor read per namespace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False  # set at shutdown: every poll answers "no change" at once
        self._epoch = 0  # advanced by resync: polls waiting from before it are answered

    def publish(self, namespace_id: int, cursor: int) -> None:
        with self._lock:
            if cursor <= self._cursors.get(namespace_id, -1):
                return
            self._cursors[namespace_id] = cursor
            loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, namespace_id)

    def _wake(self, namespace_id: int) -> None:
        channel = self._channels.get(namespace_id)
        if channel is not None:
            channel.event.set()
            channel.event = asyncio.Event()

    def release_all(self) -> None:
        """Answer every waiting poll now (with no change), and any later one at once.

        Called when the server stops: clients reconnect elsewhere instead of holding the
        shutdown until their polls time out.
        """
        self._closing = True
        for channel in self._channels.values():
            channel.event.set()

    def resync(self) -> None:
        """Forget every known cursor and answer the polls waiting now (with the cursor they
        know), from any thread. Called when notifications may have been missed: clients poll
        again at once, and each namespace's cursor is then read from the journal afresh."""
        with self._lock:
            self._cursors.clear()
            loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._answer_waiting)

    def _answer_waiting(self) -> None:
        self._epoch += 1
        for namespace_id in list(self._channels):
            self._wake(namespace_id)

    def close(self) -> None:
        """Stop background work at shutdown; a notifier on a shared bus stops its listener."""

    def latest(self, namespace_id: int) -> int | None:
        with self._lock:
            return self._cursors.get(namespace_id)

    def waiting(self) -> int:
        """How many long polls are waiting now, over all namespaces (for monitoring)."""
        return sum(channel.waiters for channel in self._channels.values())

    async def current(self, namespace_id: int) -> int:
        """The namespace's cursor, read from the journal only the first time."""
        self._loop = asyncio.get_running_loop()
        known = self.latest(namespace_id)
        if known is not None:
            return known
        loading = self._loading.get(namespace_id)
        if loading is None:  # the first of many concurrent waiters reads for all of them
            loading = asyncio.ensure_future(
                anyio.to_thread.run_sync(self._load_cursor, namespace_id)
            )
            self._loading[namespace_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(namespace_id, None))
        loaded = await asyncio.shield(loading)
        with self._lock:  # a publish may have raced the load: keep the larger
            cursor = max(loaded, self._cursors.get(namespace_id, -1))
            self._cursors[namespace_id] = cursor
        return cursor

    async def wait(self, namespace_id: int, after_cursor: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        cursor = await self.current(namespace_id)
        if cursor > after_cursor:
            return cursor
        epoch = self._epoch
        channel = self._channels.setdefault(namespace_id, _Channel())
        channel.waiters += 1
        try:
            while cursor <= after_cursor and not self._closing and self._epoch == epoch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await channel.event.wait()
                except TimeoutError:
                    pass
                cursor = self.latest(namespace_id) or cursor
        finally:
            channel.waiters -= 1
            if channel.waiters == 0:
                del self._channels[namespace_id]
        return cursor
