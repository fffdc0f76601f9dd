"""Telling the kernel that cached names, attributes or pages went stale.

Invalidations are sent from outside the FUSE request path so they can never deadlock with a
request in flight: entries go through pyfuse3's own notification thread, inodes through a
worker thread each (invalidating pages waits for page locks that reads in progress hold, and
those reads need the event loop to finish).
"""

import errno
import logging

import pyfuse3
import trio

log = logging.getLogger(__name__)


class Kernel:
    """Best-effort cache invalidation; a no-op until the filesystem is mounted."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.mounted = False

    def forget_entry(self, parent: int, name: str) -> None:
        if self.mounted:
            pyfuse3.invalidate_entry_async(parent, name.encode("utf-8"), ignore_enoent=True)

    def forget_inode(self, inode: int, attr_only: bool = False) -> None:
        if self.mounted:
            self._nursery.start_soon(self._invalidate_inode, inode, attr_only)

    @staticmethod
    async def _invalidate_inode(inode: int, attr_only: bool) -> None:
        def invalidate() -> None:
            try:
                pyfuse3.invalidate_inode(inode, attr_only)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.debug("invalidating inode %d: %s", inode, exc)

        await trio.to_thread.run_sync(invalidate, abandon_on_cancel=True)
