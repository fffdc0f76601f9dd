"""Folders shared with the user read-only: changes below them are EACCES at once.

The server refuses them too (403 read_only_share), but the mount answers writes from its
own copy and replays them later, so without this check a write would seem to succeed and be
undone at replay. A share's mount carries the server's `trusted.cirrus.share` attribute
("read" or "write"); the read-only ones are looked up again at most once a second.
"""

import base64
import errno
import time

from backend.metadata.sharing import SHARE_XATTR
from backend.protocol.errors import NotFound
from cache.metadb import ROOT_INODE
from mountfs.errors import FsError
from mountfs.vfs import VFS

REFRESH_S = 1.0
_READ = base64.b64encode(b"read").decode()


class ReadOnlyShares:
    def __init__(self, vfs: VFS) -> None:
        self._vfs = vfs
        self._roots: set[int] = set()
        self._loaded = -REFRESH_S

    def _current(self) -> set[int]:
        now = time.monotonic()
        if now - self._loaded >= REFRESH_S:
            marked = self._vfs.marked(SHARE_XATTR)
            self._roots = {node.inode for node in marked if node.xattrs[SHARE_XATTR] == _READ}
            self._loaded = now
        return self._roots

    def refuse_in(self, folder: int) -> None:
        """EACCES when `folder` is a read-only share's mount or lies below one."""
        roots = self._current()
        inode: int | None = folder
        for _ in range(4096):
            if not roots or inode is None or inode == ROOT_INODE:
                return
            if inode in roots:
                raise FsError(errno.EACCES, "this folder is shared with you read-only")
            inode = self._parent(inode)

    def refuse_on(self, inode: int) -> None:
        """EACCES when the node `inode` lies in a read-only share (its attributes or data)."""
        if self._current():
            parent = self._parent(inode)
            if parent is not None:
                self.refuse_in(parent)

    def _parent(self, inode: int) -> int | None:
        try:
            return self._vfs.node(inode).parent
        except NotFound:
            return None
