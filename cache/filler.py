"""Filling the clean block cache from files just uploaded, in the background.

An upload hands the ranges of the blocks the server now holds to the filler, which copies
them into the block cache in the kernel (`copy_file_range`) from one thread of its own at
the lowest CPU priority (nice 19), once uploads and writes have paused for FILLER_QUIET_S,
and stops between blocks when they start again: so neither the upload nor a writer waits
for, or competes with, the second copy of the data, and the copies use time nobody else
wants. A file is held open until its ranges are copied, so it can be deleted (the dirty copy
after its upload) or change meanwhile: `BlockCache.copy_in` checks a copied block against
its name when it is first read. Copies still queued at unmount are dropped; the blocks are
then fetched from the server when read.
"""

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cache.blockcache import BlockCache

log = logging.getLogger(__name__)

FILLER_NICE = 19
# Copies start once no upload has handed over blocks, and nothing was written, for this
# long: the copies would compete with them for the disk.
FILLER_QUIET_S = 1.0
Range = tuple[int, int, str]  # (offset in the file, size, block hash)


class CacheFiller:
    """One background thread copying block ranges of open files into a BlockCache."""

    def __init__(self, cache: "BlockCache") -> None:
        self._cache = cache
        self._queue: queue.SimpleQueue[tuple[int, Sequence[Range] | None] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._last_busy = 0.0

    def open(self, path: str) -> int | None:
        """A descriptor of the file to copy ranges from (None when it is gone already); hand
        it back with `release` once no more ranges come."""
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.debug("not caching the blocks of %s: %s", path, exc)
            return None

    def hold_off(self) -> None:
        """Something is being written: no copy starts for FILLER_QUIET_S."""
        self._last_busy = time.monotonic()

    def submit(self, fd: int, ranges: Sequence[Range]) -> None:
        self.hold_off()
        self._start()
        self._queue.put((fd, ranges))

    def release(self, fd: int) -> None:
        """Close `fd` once the ranges submitted before are copied."""
        with self._lock:
            stopped = self._stopping
        if stopped:
            os.close(fd)
            return
        self._start()
        self._queue.put((fd, None))

    def close(self) -> None:
        """Drop what is still queued (closing its descriptors) and stop the thread."""
        with self._lock:
            thread, self._stopping = self._thread, True
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="cache-filler", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # a niceness it may not take is no failure
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FILLER_NICE)
        while (item := self._queue.get()) is not None:
            fd, ranges = item
            if ranges is None:
                os.close(fd)
            else:
                self._copy(fd, ranges)
        while not self._queue.empty():  # queued after the stop: close what they hold
            if (item := self._queue.get()) is not None and item[1] is None:
                os.close(item[0])

    def _quiet(self) -> bool:
        """Wait until uploads and writes have been quiet for FILLER_QUIET_S; False when
        stopping."""
        while not self._stopping:
            wait = self._last_busy + FILLER_QUIET_S - time.monotonic()
            if wait <= 0:
                return True
            time.sleep(min(wait, 0.1))
        return False

    def _copy(self, fd: int, ranges: Sequence[Range]) -> None:
        try:
            for offset, size, name in ranges:
                if not self._quiet():
                    return
                self._cache.copy_in(name, fd, offset, size)
        except OSError as exc:  # the upload went through; a full disk costs a refetch
            log.debug("could not cache uploaded blocks: %s", exc)
