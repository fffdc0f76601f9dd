"""When acknowledged writes reach the disk: what close() and fsync() promise.

As on a local filesystem (ext4 and its `commit=5`), `close()` does not wait for the disk: the
dirty copy is in the page cache and its acknowledgement in the journal's WAL (committed with
`synchronous=NORMAL`), and both survive a crash of the mount process. `fsync()` waits for the
disk: the dirty copy, then the WAL. A *group commit* once a second does the same for
everything closed (and every other change committed) since the last round, so all of it is
safe against a power cut within about a second, for one fsync per file and one of the WAL
instead of two per close. docs/client.md, "What close() and fsync() promise".
"""

import logging
import os
from collections.abc import Callable, Iterable

import trio

from cache.dirty import DirtyFiles

log = logging.getLogger(__name__)

GROUP_COMMIT_SECONDS = 1.0


class GroupSync:
    """An fsync of the journal, shared: concurrent callers wait for one fsync that started
    after their commit instead of each paying for their own, and the fsync runs in a worker
    thread so other requests are served meanwhile."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._requested = 0
        self._covered = 0
        self._busy = False
        self._idle = trio.Event()

    async def __call__(self) -> None:
        self._requested += 1
        ticket = self._requested
        while self._covered < ticket:
            if self._busy:
                await self._idle.wait()
                continue
            self._busy, start = True, self._requested
            try:
                await trio.to_thread.run_sync(self._sync)
                self._covered = max(self._covered, start)
            finally:
                self._busy = False
                self._idle.set()
                self._idle = trio.Event()


def _fsync_files(paths: Iterable[str]) -> None:
    """fsync each file that still exists (an uploaded dirty copy may be gone already)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Durability:
    """Tracks what was acknowledged but is not on the disk yet, and puts it there: at once
    for fsync(), in the next group commit for close()."""

    def __init__(
        self, dirty: DirtyFiles, sync_journal: Callable[[], None], commits: Callable[[], int]
    ) -> None:
        self._dirty = dirty
        self._journal = GroupSync(sync_journal)
        self._commits = commits
        self._synced_commits = -1
        self._unsynced: set[int] = set()  # dirty copies acknowledged by close() only
        self._superseded: set[int] = set()  # preserved copies to drop once the WAL is synced
        # Files grown since an acknowledgement that is on the disk, with nothing noted there
        # since: the disk still holds that acknowledgement as their last word.
        self._unnoted: set[int] = set()

    def power_safe(self, inode: int) -> bool:
        """Whether the inode's acknowledged content is on the disk, not only in the page
        cache: the first change after it must then note that durably before it lands, so
        that a power cut can never leave a half-written file as the acknowledged one."""
        return inode not in self._unsynced

    def must_note(self, inode: int) -> bool:
        """Whether a change below the acknowledged size must be noted on the disk before it
        lands: the disk may hold an acknowledgement as the file's last word (an fsync or a
        group commit put it there, and the appends since were not noted), and a power cut
        must not leave that content half rewritten."""
        return self.power_safe(inode) or inode in self._unnoted

    def grew(self, inode: int) -> None:
        """The file grew past its acknowledged size with nothing noted on the disk (nothing
        need be: recovery cuts it back to that size)."""
        if self.power_safe(inode):
            self._unnoted.add(inode)

    def noted(self, inode: int) -> None:
        """The change under way is noted on the disk (or was, earlier in this cycle)."""
        self._unnoted.discard(inode)

    def closed(self, inode: int) -> None:
        """close() acknowledged the dirty copy: the next group commit puts it on the disk,
        and only then drops the preserved copy it supersedes."""
        self._unsynced.add(inode)
        self._superseded.add(inode)

    async def journal(self) -> None:
        """Wait until every commit so far is on the disk."""
        await self._journal()

    async def fsync_content(self, inode: int) -> None:
        """The first half of what fsync() does: the dirty copy on the disk, before the
        journal entry acknowledging it is committed (the other order could leave, after a
        power cut, an acknowledgement naming data that never reached the disk)."""
        self._unsynced.discard(inode)
        await trio.to_thread.run_sync(_fsync_files, [self._dirty.path(inode)])

    async def acknowledged(self, inode: int) -> None:
        """The second half: the acknowledgement on the disk, then the preserved copy it
        supersedes can go."""
        self._superseded.discard(inode)
        await self._journal()
        self._unnoted.discard(inode)
        self._dirty.drop_preserved(inode)

    async def fsync(self, inode: int) -> None:
        """fsync() of content that close() acknowledged already."""
        await self.fsync_content(inode)
        await self.acknowledged(inode)

    async def group_commit(self) -> None:
        """One round: the dirty copies closed since the last round, then the WAL."""
        commits = self._commits()
        if not self._unsynced and not self._superseded and commits == self._synced_commits:
            return
        inodes, self._unsynced = self._unsynced, set()
        superseded, self._superseded = self._superseded, set()
        try:
            await trio.to_thread.run_sync(_fsync_files, [self._dirty.path(i) for i in inodes])
            await self._journal()
        except BaseException:
            self._unsynced |= inodes
            self._superseded |= superseded
            raise
        self._synced_commits = commits
        self._unnoted -= inodes
        for inode in superseded:
            self._dirty.drop_superseded(inode)

    async def run(self, interval: float = GROUP_COMMIT_SECONDS) -> None:
        """Group commits until cancelled (the unmount runs a last one itself)."""
        while True:
            await trio.sleep(interval)
            try:
                await self.group_commit()
            except OSError as exc:  # a disk error: the next round tries again
                log.warning("group commit failed, retrying in %.0f s: %s", interval, exc)
