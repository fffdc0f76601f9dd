"""The read-only `.cirrus/` folder at the mount root, beside the mirrored drive.

Like NetApp's `.snapshot`, it is reachable by path but not listed in the root's readdir, so
`find`, `du`, `rsync` and file managers do not wander into it:

    .cirrus/history/PATH/YYYY-MM-DD_HHMMSS.ext   the kept revisions of the drive file PATH,
                                                 named by commit time (local time), read on
                                                 demand like any file
    .cirrus/trash/NAME                           the deleted files and folders (the server's
                                                 trash), read on demand (mountfs.trashview)
    .cirrus/status.json                          what `cirrus status` shows: pending work,
                                                 conflicts, connection (made at each open)
    .cirrus/mount.json                           server, token and device of this mount, for
                                                 the user CLI (mode 0400: the kernel lets only
                                                 the mount's owner read it)

Folders under `history/` follow the mirror (a drive folder is a folder, a file is a folder
of its revisions). A revision list is asked of the server when first listed and kept until
the file's revision in the mirror changes: a remote change applied by the feed, or our own
upload, shows at the next listing. Entries have a short kernel timeout for the same reason.
Virtual inodes and handles are numbered far above the mirror's, so the FUSE layer tells them
apart by number alone.
"""

import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from backend.protocol.errors import NotADirectory, NotFound
from cache.metadb import ROOT_INODE, MetaDB, Node
from mountfs.content import Content, Revision
from mountfs.errors import FsError
from mountfs.published import VIRTUAL_DIR
from mountfs.remote import RemoteDrive
from mountfs.trashview import Trashed, TrashView

NAME = VIRTUAL_DIR
FIRST_INODE = 1 << 60
FIRST_HANDLE = 1 << 40
HISTORY_LIMIT = 1000
ENTRY_TIMEOUT = 1.0
_DIR_MODE = 0o555
_FILE_MODE = 0o444
_SECRET_MODE = 0o400
# Fixed inodes of the fixed entries.
_FIXED = 5
_ROOT, _HISTORY, _STATUS, _MOUNT, _TRASH = range(FIRST_INODE, FIRST_INODE + _FIXED)


@dataclass(slots=True)
class _Entry:
    """What a virtual inode stands for: `kind` is root, history, status, mount, folder (a
    drive folder under history/), file (a drive file's revisions), revision, trash or
    trashed (a file or folder under trash/)."""

    kind: str
    mirror: int = ROOT_INODE  # the mirror inode of a folder or file entry
    revision: Revision | None = None
    trashed: Trashed | None = None
    mtime_ns: int = 0
    key: tuple = ()  # what `_inode` made it for


@dataclass(frozen=True, slots=True)
class MountInfo:
    """What the user CLI learns from `.cirrus/mount.json`."""

    server: str
    token: str
    device: str
    mountpoint: str
    cache_dir: str


class VirtualTree:
    def __init__(
        self,
        db: MetaDB,
        content: Content,
        remote: RemoteDrive,
        info: MountInfo,
        online: Callable[[], bool],
    ) -> None:
        self._db = db
        self._content = content
        self._remote = remote
        self._info = info
        self._online = online
        self._entries: dict[int, _Entry] = {
            _ROOT: _Entry("root"),
            _HISTORY: _Entry("history"),
            _STATUS: _Entry("status"),
            _MOUNT: _Entry("mount"),
            _TRASH: _Entry("trash"),
        }
        self._inodes: dict[tuple, int] = {}
        self._next_inode = FIRST_INODE + _FIXED
        self._trash = TrashView(remote, lambda: db.get_state("cursor"))
        # mirror inode -> ((rev, head_rev) listed, {file name: Revision})
        self._histories: dict[int, tuple[tuple, dict[str, Revision]]] = {}
        self._handles: dict[int, bytes | Revision] = {}
        self._next_handle = FIRST_HANDLE

    # -- which requests are ours --------------------------------------------------------------

    @staticmethod
    def owns(inode: int) -> bool:
        return inode >= FIRST_INODE

    @staticmethod
    def owns_handle(fh: int) -> bool:
        return fh >= FIRST_HANDLE

    def is_entry(self, parent: int, raw: bytes) -> bool:
        """Whether a lookup of `raw` in `parent` is answered here."""
        return self.owns(parent) or (parent == ROOT_INODE and raw == NAME.encode())

    def refuse_change(self, parent: int, raw: bytes) -> None:
        """Refuse a namespace change inside `.cirrus/` or of the name itself."""
        if self.is_entry(parent, raw):
            raise FsError(errno.EROFS, f"{NAME} is read-only")

    # -- lookups and attributes ---------------------------------------------------------------

    async def lookup(self, parent: int, raw: bytes) -> Node:
        if parent == ROOT_INODE:
            return self.attrs(_ROOT)
        name = raw.decode("utf-8", "surrogateescape")
        entry = self._entry(parent)
        if entry.kind in ("history", "folder"):  # one mirror lookup, not a listing
            node = self._db.child(entry.mirror, name)
            if node is not None and _shown(node):
                return self.attrs(self._inode(_key(node)))
        elif entry.kind == "file":
            if name in await self._revisions(entry.mirror):
                return self.attrs(self._inode(("revision", entry.mirror, name)))
        else:
            for child_name, inode in await self._children(parent):
                if child_name == name:
                    return self.attrs(inode)
        raise NotFound(f"no entry {name!r} in {NAME}")

    def attrs(self, inode: int) -> Node:
        entry = self._entry(inode)
        trashed = entry.trashed
        if entry.kind in ("root", "history", "folder", "file", "trash") or (
            trashed is not None and trashed.type == "dir"
        ):
            kind, mode, size = "dir", _DIR_MODE, 4096
        elif entry.kind == "revision":
            kind, mode, size = "file", _FILE_MODE, entry.revision.size
        elif trashed is not None:
            kind, mode, size = "file", _FILE_MODE, trashed.size
        else:
            mode = _SECRET_MODE if entry.kind == "mount" else _FILE_MODE
            kind, size = "file", len(self._document(entry.kind))
        mtime = entry.mtime_ns or self._mirror_mtime(entry)
        parent = ROOT_INODE if inode == _ROOT else _ROOT
        return Node(inode, None, parent, "", kind, mode, size, mtime, mtime, 0, None, None)

    def forget(self, inode: int) -> None:
        """Drop an entry the kernel no longer knows (the fixed ones stay)."""
        entry = self._entries.get(inode)
        if entry is not None and inode >= FIRST_INODE + _FIXED:
            del self._entries[inode]
            self._inodes.pop(entry.key, None)

    # -- folders ------------------------------------------------------------------------------

    async def readdir(self, inode: int, after: int) -> list[tuple[str, Node]]:
        """The children after the one numbered `after` (readdir offsets are positions)."""
        children = await self._children(inode)
        return [(name, self.attrs(child)) for name, child in children[after:]]

    async def _children(self, inode: int) -> list[tuple[str, int]]:
        entry = self._entry(inode)
        if entry.kind == "root":
            return [
                ("history", _HISTORY),
                ("mount.json", _MOUNT),
                ("status.json", _STATUS),
                ("trash", _TRASH),
            ]
        if entry.kind in ("history", "folder"):
            nodes = self._db.children(entry.mirror, limit=1_000_000)
            return [(node.name, self._inode(_key(node))) for node in nodes if _shown(node)]
        if entry.kind == "file":
            revisions = await self._revisions(entry.mirror)
            return [(name, self._inode(("revision", entry.mirror, name))) for name in revisions]
        if entry.kind == "trash" or (entry.trashed is not None and entry.trashed.type == "dir"):
            shown = await (
                self._trash.items()
                if entry.trashed is None
                else self._trash.children(entry.trashed)
            )
            return [(name, self._inode(t.key, t)) for name, t in shown.items()]
        raise NotADirectory(f"{NAME} entry {inode} is not a folder")

    async def _revisions(self, mirror: int) -> dict[str, Revision]:
        """The uploaded revisions of a drive file by name, oldest first."""
        node = self._db.get(mirror)
        if node is None or node.remote_id is None:
            return {}
        key = (node.rev, node.head_rev)
        known = self._histories.get(mirror)
        if known is not None and known[0] == key:
            return known[1]
        answer = await self._remote.history(self._db.path(mirror), HISTORY_LIMIT)
        revisions: dict[str, Revision] = {}
        mtimes: dict[str, int] = {}
        for item in sorted(answer, key=lambda item: item["rev"]):
            if item["status"] != "uploaded":
                continue
            name = revision_name(node.name, item["created"], item["rev"], revisions)
            revisions[name] = Revision(node.remote_id, item["rev"], item["size"])
            mtimes[name] = item["mtime_ns"]
        self._histories[mirror] = (key, revisions)
        for name, mtime in mtimes.items():
            self._entries[self._inode(("revision", mirror, name))].mtime_ns = mtime
        return revisions

    # -- files --------------------------------------------------------------------------------

    async def open(self, inode: int, flags: int) -> int:
        if (flags & os.O_ACCMODE) != os.O_RDONLY:
            raise FsError(errno.EROFS, f"{NAME} is read-only")
        entry = self._entry(inode)
        if entry.kind in ("status", "mount"):
            opened: bytes | Revision = self._document(entry.kind)
        elif entry.kind == "revision":
            opened = entry.revision
        elif entry.trashed is not None and entry.trashed.type == "file":
            trashed = entry.trashed
            rev = await self._trash.revision(trashed)
            opened = Revision(trashed.node_id, rev, trashed.size)
        else:
            raise FsError(errno.EISDIR, "a folder")
        fh = self._next_handle
        self._next_handle += 1
        self._handles[fh] = opened
        return fh

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        opened = self._handles.get(fh)
        if opened is None:
            raise FsError(errno.EBADF, "unknown file handle")
        if isinstance(opened, bytes):
            return opened[offset : offset + size]
        return await self._content.read(0, opened, offset, size, sequential=True)

    def release(self, fh: int) -> None:
        self._handles.pop(fh, None)

    # -- helpers ------------------------------------------------------------------------------

    def _entry(self, inode: int) -> _Entry:
        entry = self._entries.get(inode)
        if entry is None:
            raise NotFound(f"{NAME} entry {inode} is gone")
        return entry

    def _inode(self, key: tuple, trashed: Trashed | None = None) -> int:
        """The inode of a folder, file, revision or trashed entry, made on first sight."""
        inode = self._inodes.get(key)
        if inode is None:
            inode = self._inodes[key] = self._next_inode
            self._next_inode += 1
            if trashed is not None:
                entry = _Entry("trashed", trashed=trashed, mtime_ns=trashed.mtime_ns, key=key)
            else:
                kind, mirror = key[0], key[1]
                revision = self._histories[mirror][1][key[2]] if kind == "revision" else None
                entry = _Entry(kind, mirror, revision, key=key)
            self._entries[inode] = entry
        return inode

    def _mirror_mtime(self, entry: _Entry) -> int:
        node = self._db.get(entry.mirror)
        return node.mtime_ns if node is not None else time.time_ns()

    def _document(self, kind: str) -> bytes:
        if kind == "mount":
            return json.dumps(
                {
                    "server": self._info.server,
                    "token": self._info.token,
                    "device": self._info.device,
                    "mountpoint": self._info.mountpoint,
                    "cache_dir": self._info.cache_dir,
                }
            ).encode()
        return json.dumps(self.status()).encode()

    def status(self) -> dict:
        """Pending work, conflicts and connection, as `cirrus status` shows them."""
        files, size = self._db.pending_uploads()
        return {
            "server": self._info.server,
            "device": self._info.device,
            "connection": "online" if self._online() else "offline",
            "pending_operations": self._db.journal_length(),
            "upload_files": files,
            "upload_bytes": size,
            "conflicts": [self._db.path(inode) for inode in self._db.conflicted()],
            "cursor": int(self._db.get_state("cursor") or 0),
        }


def _shown(node: Node) -> bool:
    """Folders, and files the server has (symlinks and files not yet sent have no history)."""
    return node.is_dir or (node.type == "file" and node.remote_id is not None)


def _key(node: Node) -> tuple:
    return ("folder" if node.is_dir else "file", node.inode)


def revision_name(file_name: str, created: str, rev: int, taken: dict) -> str:
    """`YYYY-MM-DD_HHMMSS.ext` of a revision committed at `created` (ISO 8601 UTC), in local
    time; a second revision in the same second gets `-rREV` before the extension."""
    moment = datetime.fromisoformat(created.replace("Z", "+00:00")).astimezone()
    ext = os.path.splitext(file_name)[1]
    stem = moment.strftime("%Y-%m-%d_%H%M%S")
    name = stem + ext
    return f"{stem}_r{rev}{ext}" if name in taken else name
