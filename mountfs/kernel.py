"""Telling the kernel that cached names, attributes or pages went stale.

Invalidations are sent from worker threads, outside the FUSE request path, so they can never
deadlock with a request in flight (invalidating pages waits for page locks that reads in
progress hold, and those reads need the event loop to finish). Every call in flight is
counted: the FUSE session must outlive them all, since libfuse dereferences the session of a
notification without checking it (a call after `pyfuse3.close()` crashes the process).
"""

import errno
import logging
from collections.abc import Callable
from functools import partial

import pyfuse3
import trio

log = logging.getLogger(__name__)


class Kernel:
    """Best-effort cache invalidation; a no-op until the filesystem is mounted."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.mounted = False
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    def forget_entry(self, parent: int, name: str) -> None:
        if self.mounted:
            self._send(partial(pyfuse3.invalidate_entry, parent, name.encode("utf-8")))

    def forget_inode(self, inode: int, attr_only: bool = False) -> None:
        if self.mounted:
            self._send(partial(pyfuse3.invalidate_inode, inode, attr_only))

    async def unmounting(self, seconds: float) -> None:
        """Send nothing more and wait (at most `seconds`) for the calls in flight: after
        this the session may be closed."""
        self.mounted = False
        with trio.move_on_after(seconds):
            await self._idle.wait()
        if self._in_flight:
            log.warning("%d cache invalidations still in flight at unmount", self._in_flight)

    def _send(self, call: Callable[[], None]) -> None:
        if self._idle.is_set():
            self._idle = trio.Event()
        self._in_flight += 1
        self._nursery.start_soon(self._run, call)

    async def _run(self, call: Callable[[], None]) -> None:
        try:
            # Never abandoned on cancellation: the thread must finish before the session goes.
            await trio.to_thread.run_sync(partial(_quietly, call))
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()


def _quietly(call: Callable[[], None]) -> None:
    """Run an invalidation; the kernel not knowing the entry or inode is not an error."""
    try:
        call()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.debug("cache invalidation failed: %s", exc)
