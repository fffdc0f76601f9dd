"""Dirty files: the local copies that writes go to until the uploader has sent them.

One file per inode under `<cache>/dirty/`. They are staging data, never evicted: the only copy
of acknowledged writes until the server has them. An open descriptor per inode is shared by
all handles of that inode (reference counted), so writes through one handle are visible
through every other at once, as on a local filesystem.

A *preserved* copy (`<inode>.acked`) keeps acknowledged content that is not uploaded yet while
the dirty copy is being changed again: after a crash it is what the file goes back to, and it
is what the uploader sends. It is a reflink (FICLONE) where the filesystem shares extents, so
keeping it costs no data copy; elsewhere a plain copy. A newer acknowledgement *supersedes* it
at once (the dirty copy is then the content to send) but deletes it only once that
acknowledgement is durable: until then a power cut would go back to it.
"""

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Callable

from cache.spares import SpareFiles

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
# What the copies of one inode are called: the dirty copy, the preserved one, a temporary.
_SUFFIXES = ("", ".acked", ".part")

log = logging.getLogger(__name__)


class DirtyFiles:
    """Named dirty copies and their shared descriptors."""

    def __init__(self, root: str) -> None:
        self._root = root
        os.makedirs(root, exist_ok=True)
        self._fds: dict[int, tuple[int, int]] = {}  # inode -> (fd, references)
        self._superseded: set[int] = set()  # preserved copies kept only until a sync
        self.spares = SpareFiles(os.path.join(root, "spare"))

    def path(self, inode: int) -> str:
        return os.path.join(self._root, str(inode))

    def exists(self, inode: int) -> bool:
        return os.path.exists(self.path(inode))

    def install(self, inode: int, source: str) -> None:
        """Make `source` (a finished temporary file) the dirty copy, atomically."""
        os.replace(source, self.path(inode))
        self._reopen(inode)

    def create_empty(self, inode: int) -> None:
        """An empty dirty copy, its descriptor kept for the handle about to be opened."""
        fd = self._open_spare(inode)
        if fd < 0:
            fd = os.open(self.path(inode), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        old, refs = self._fds.get(inode, (-1, 0))
        if old >= 0:
            os.close(old)
        self._fds[inode] = (fd, refs)

    def _open_spare(self, inode: int) -> int:
        """A spare file renamed into place as the dirty copy and opened, or -1 if none."""
        spare = self.spares.take()
        if spare is None:
            return -1
        try:
            os.rename(spare, self.path(inode))
        except FileNotFoundError:  # removed under us: make one instead
            return -1
        return os.open(self.path(inode), os.O_RDWR)

    def preserved_path(self, inode: int) -> str:
        return os.path.join(self._root, f"{inode}.acked")

    def has_preserved(self, inode: int) -> bool:
        """Whether a preserved copy holds the acknowledged content (not a superseded one)."""
        return inode not in self._superseded and os.path.exists(self.preserved_path(inode))

    def preserve(self, inode: int, size: int) -> None:
        """Keep the dirty copy's first `size` bytes (the acknowledged content: anything past
        it was appended since) as the preserved copy, durably (blocking: run it in a worker
        thread). Called before the first change below the acknowledged size."""
        self._clone(self.path(inode), self.preserved_path(inode), inode, size)
        self._superseded.discard(inode)

    def cut_to(self, inode: int, size: int) -> None:
        """Cut a dirty copy grown past `size` back to it, durably (crash recovery: what was
        appended after the last acknowledgement was never acknowledged)."""
        try:
            fd = os.open(self.path(inode), os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            if os.fstat(fd).st_size > size:
                os.ftruncate(fd, size)
                os.fsync(fd)
        finally:
            os.close(fd)

    def supersede_preserved(self, inode: int) -> None:
        """A newer acknowledgement was recorded: from now on the dirty copy is what an upload
        sends, although the preserved copy stays on disk until `drop_preserved`."""
        self._superseded.add(inode)

    def drop_preserved(self, inode: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.preserved_path(inode))
        self._superseded.discard(inode)

    def has_preserved_file(self, inode: int) -> bool:
        """Whether a preserved copy is on the disk, superseded or not."""
        return os.path.exists(self.preserved_path(inode))

    def drop_preserved_durably(self, inode: int) -> None:
        """Drop the preserved copy and make its removal durable (blocking: run it in a
        worker thread), so that no crash, power cut included, brings it back."""
        self.drop_preserved(inode)
        self._sync_dir()

    def drop_superseded(self, inode: int) -> None:
        """Drop the preserved copy once the acknowledgement superseding it is durable, unless
        a newer change preserved a copy again meanwhile."""
        if inode in self._superseded:
            self.drop_preserved(inode)

    def restore_preserved(self, inode: int) -> None:
        """Make the dirty copy a copy of the preserved one again (crash recovery). The
        preserved copy stays until the caller has recorded the restoration."""
        self._clone(self.preserved_path(inode), self.path(inode), inode)
        self._reopen(inode)

    def _clone(
        self, source_path: str, target_path: str, inode: int, size: int | None = None
    ) -> None:
        """Durably replace `target_path` with a copy of `source_path`, or of its first `size`
        bytes (reflink if possible)."""
        temp = self.temp_path(inode)
        with open(source_path, "rb") as source, open(temp, "wb") as target:
            try:
                fcntl.ioctl(target.fileno(), FICLONE, source.fileno())
            except OSError:
                shutil.copyfileobj(source, target, 1 << 20)
            if size is not None:
                target.truncate(size)
            os.fsync(target.fileno())
        os.replace(temp, target_path)
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def temp_path(self, inode: int) -> str:
        return os.path.join(self._root, f"{inode}.part")

    def acquire(self, inode: int) -> None:
        """Take a reference to the inode's descriptor (opened lazily when the file exists)."""
        fd, refs = self._fds.get(inode, (-1, 0))
        if fd < 0 and self.exists(inode):
            fd = os.open(self.path(inode), os.O_RDWR)
        self._fds[inode] = (fd, refs + 1)

    def release(self, inode: int) -> None:
        fd, refs = self._fds[inode]
        if refs > 1:
            self._fds[inode] = (fd, refs - 1)
            return
        del self._fds[inode]
        if fd >= 0:
            os.close(fd)

    def fd(self, inode: int) -> int:
        """The shared descriptor of an acquired, existing dirty file."""
        fd, refs = self._fds.get(inode, (-1, 0))
        if fd < 0:
            fd = os.open(self.path(inode), os.O_RDWR)
            self._fds[inode] = (fd, refs)
        return fd

    def size(self, inode: int) -> int:
        return os.stat(self.path(inode)).st_size

    def size_if_exists(self, inode: int) -> int | None:
        """The dirty copy's size, None when there is none (one stat, for attributes)."""
        try:
            return os.stat(self.path(inode)).st_size
        except FileNotFoundError:
            return None

    def remove(self, inode: int, keep: Callable[[str], bool] | None = None) -> None:
        """Drop the dirty copy and any preserved one (open descriptors keep reading the
        unlinked file). `keep(path)` may take the copy over instead, by renaming it, when
        no descriptor of ours is open on it (writes through one would change it there)."""
        if keep is None or inode in self._fds or not keep(self.path(inode)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(inode))
        self.drop_preserved(inode)

    def sweep(self, needed: set[int]) -> None:
        """Delete what a crash left behind and nothing reads: the dirty and preserved copies
        of inodes not in `needed` (the mirror committed them clean, or dropped them, and
        the crash came before the copies were deleted) and every unfinished temporary copy.
        Called at start-up, before any request, once recovery has settled each file."""
        freed = count = 0
        with os.scandir(self._root) as entries:
            for entry in entries:
                stem, dot, suffix = entry.name.partition(".")
                if not stem.isdigit() or dot + suffix not in _SUFFIXES:
                    continue  # the spares' folder, or not ours
                if int(stem) in needed and suffix != "part":
                    continue
                with contextlib.suppress(FileNotFoundError):
                    freed += entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                    count += 1
        if count:
            log.info("deleted %d copies (%d bytes) a crash left in the cache", count, freed)

    def _reopen(self, inode: int) -> None:
        if inode in self._fds:
            fd, refs = self._fds[inode]
            if fd >= 0:
                os.close(fd)
            self._fds[inode] = (os.open(self.path(inode), os.O_RDWR), refs)

    def close_all(self) -> None:
        for fd, _refs in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._fds.clear()
