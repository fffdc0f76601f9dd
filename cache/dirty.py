"""Dirty files: the local copies that writes go to until the uploader has sent them.

One file per inode under `<cache>/dirty/`. They are staging data, never evicted: the only copy
of acknowledged writes until the server has them. An open descriptor per inode is shared by
all handles of that inode (reference counted), so writes through one handle are visible
through every other at once, as on a local filesystem.
"""

import contextlib
import os


class DirtyFiles:
    """Named dirty copies and their shared descriptors."""

    def __init__(self, root: str) -> None:
        self._root = root
        os.makedirs(root, exist_ok=True)
        self._fds: dict[int, tuple[int, int]] = {}  # inode -> (fd, references)

    def path(self, inode: int) -> str:
        return os.path.join(self._root, str(inode))

    def exists(self, inode: int) -> bool:
        return os.path.exists(self.path(inode))

    def install(self, inode: int, source: str) -> None:
        """Make `source` (a finished temporary file) the dirty copy, atomically."""
        os.replace(source, self.path(inode))
        self._reopen(inode)

    def create_empty(self, inode: int) -> None:
        with open(self.path(inode), "wb"):
            pass
        self._reopen(inode)

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

    def remove(self, inode: int) -> None:
        """Drop the dirty copy (open descriptors keep reading the unlinked file)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(inode))

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
