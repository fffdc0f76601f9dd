"""The virtual filesystem behind the FUSE handlers: inodes, lookup counts, handles.

Every operation applies to the local mirror at once and, when it changes the drive, appends
the journal entry that will replay it on the server in the same transaction; the sync engine
does the network part later. So the mount answers without a round trip and works offline.

Lifetimes: a node the kernel still knows (lookup count > 0) or that has open handles is not
deleted when it is unlinked or replaced, only *detached* (parent NULL); `forget` and the last
`release` delete it. Write generations (`_gens`) count writes per inode so that a close
journals an upload only when something changed, and so that the uploader can tell whether the
dirty copy changed under it.

Crash semantics: what close()/fsync() acknowledged is never lost and never replaced by a
partial write (close() against a crash of the mount process, fsync() and the group commit
after it against a power cut too: mountfs/durability.py). Writes that only grow the file
beyond its acknowledged size leave the acknowledged content in place as the dirty copy's
prefix and cost nothing more (mountfs/acknowledged.py). The first change below that size
sets the node's `modified` flag (one transaction per write cycle, durable before the change
when the acknowledgement is, or when appends went unnoted) and, when the acknowledged content
is not uploaded yet, keeps it as a preserved copy first. After a crash, a modified dirty copy
goes back to the acknowledged state: the preserved copy, else the server revision the mirror
names; an unmodified one is cut back to the acknowledged size.
"""

import base64
import errno
import logging
import os
import stat
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import trio

from backend.protocol.errors import (
    AlreadyExists,
    InvalidPathError,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    QuotaExceeded,
)
from backend.protocol.limits import MAX_FILE_SIZE
from backend.protocol.paths import NAME_MAX, PATH_MAX, check_name
from cache.metadb import ROOT_INODE, MetaDB, Node
from mountfs import acl
from mountfs.acknowledged import Acknowledged
from mountfs.content import Content, Revision
from mountfs.durability import Durability
from mountfs.errors import FsError
from mountfs.published import STATUS_XATTR
from mountfs.quota import Usage

log = logging.getLogger(__name__)

# Namespaces the server keeps (backend/metadata/tree.py); ACLs are system.posix_acl_*.
XATTR_PREFIXES = ("user.", "security.", "trusted.", "system.posix_acl_")
_RESERVED_XATTR_PREFIX = "user.cirrus."
XATTR_VALUE_MAX = 64 * 1024


def decode_name(raw: bytes) -> str:
    """A FUSE name as the drive stores it: UTF-8, checked by the shared path rules, in NFC
    as the server keeps it (docs/api.md), so the NFD spelling of a name finds, replaces or
    clashes with the same file as on the server, before and after the sync."""
    if len(raw) > NAME_MAX:
        raise NameTooLong(f"name is longer than {NAME_MAX} bytes")
    try:
        return check_name(unicodedata.normalize("NFC", raw.decode("utf-8")))
    except UnicodeDecodeError:
        raise InvalidPathError("name is not valid UTF-8") from None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request (the FUSE context): new nodes belong to them."""

    uid: int
    gid: int


ROOT = Caller(0, 0)
# relatime: a read updates atime when it is not after the last change, or once a day.
ATIME_REFRESH_NS = 24 * 3600 * 10**9


def _may_see(name: str, caller: Caller) -> bool:
    """trusted.* attributes exist only for root, as on Linux filesystems."""
    return caller.uid == 0 or not name.startswith("trusted.")


@dataclass(slots=True)
class Handle:
    """An open file; `revision` is what it reads while the file is clean (pinned at open),
    None once reads go to the dirty copy. Reads need nothing else (no database lookup)."""

    inode: int
    writable: bool
    revision: Revision | None
    next_offset: int = -1


class VFS:
    """Namespace and file operations over the mirror; no SQL, HTTP or FUSE types here."""

    def __init__(
        self,
        db: MetaDB,
        content: Content,
        on_journal: Callable[[], None],
        usage: Usage | None = None,
    ) -> None:
        self._db = db
        self.content = content
        self.usage = usage or Usage()
        self._on_journal = on_journal
        self._lookups: dict[int, int] = {}
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._gens: dict[int, int] = {}
        self._flushed: dict[int, int] = {}
        self._mtimes: dict[int, int] = {}
        self._held: dict[int, dict] = {}  # attributes set while writing, until the close
        self.stale: set[int] = set()
        self.durability = Durability(content.dirty, db.sync, db.commits)
        self.acknowledged = Acknowledged(content.dirty, self.generation)
        self._recover()

    def _recover(self) -> None:
        """After a crash: drop nodes nobody holds any more, put files changed since their last
        acknowledgement back to it, queue the upload of acknowledged dirty copies that have
        no pending entry (better sent late than silently diverging), and delete the copies
        left for files that are clean."""
        for inode in self._db.detached():
            self._purge(inode)
        for inode in self._db.dirty_inodes():
            node = self._db.get(inode)
            if node is not None and node.modified:
                self._restore_acknowledged(node)
            elif node is not None:
                self.content.dirty.drop_preserved(inode)
                self.content.dirty.cut_to(inode, node.size)  # appends not acknowledged
        for inode in self._db.dirty_inodes():
            node = self._db.get(inode)
            orphaned = node is not None and node.parent is not None
            if orphaned and not self._db.has_pending(inode) and self.content.dirty.exists(inode):
                self._journal("upload", inode, {"path": self._db.path(inode)})
        self.content.dirty.sweep(self._db.inodes_with_local_content())

    def _restore_acknowledged(self, node: Node) -> None:
        """Undo changes made after the last acknowledgement; each step can be redone if the
        mount dies again meanwhile (the preserved copy goes only once the flag is cleared)."""
        dirty = self.content.dirty
        if dirty.has_preserved(node.inode):
            dirty.restore_preserved(node.inode)
            self._db.update(node.inode, modified=0, size=dirty.size(node.inode))
            dirty.drop_preserved(node.inode)
        else:
            dirty.remove(node.inode)
            self._db.update(node.inode, dirty=0, modified=0)

    # -- helpers ------------------------------------------------------------------------------

    def node(self, inode: int) -> Node:
        node = self._db.get(inode)
        if node is None:
            raise NotFound(f"inode {inode} does not exist")
        return node

    def attrs(self, inode: int) -> Node:
        """The node as the kernel should see it (a dirty copy's live size and mtime)."""
        node = self.node(inode)  # a fresh row: changing it changes nothing else
        for key, value in self._held.get(inode, {}).items():
            setattr(node, key, value)
        if node.dirty and (size := self.content.dirty.size_if_exists(inode)) is not None:
            node.size = size
            node.mtime_ns = self._mtimes.get(inode, node.mtime_ns)
            node.ctime_ns = max(node.ctime_ns, node.mtime_ns)
        return node

    def marked(self, xattr: str) -> list[Node]:
        """The nodes carrying an extended attribute (mountfs/shares.py)."""
        return self._db.with_xattr(xattr)

    def nlink(self, node: Node) -> int:
        return self._db.nlink(node)

    def _dir(self, inode: int) -> Node:
        node = self.node(inode)
        if not node.is_dir:
            raise NotADirectory(f"inode {inode} is not a folder")
        return node

    def _name(self, parent: int, raw: bytes) -> Node:
        """The row holding a name (a hard link's own row, not its file)."""
        self._dir(parent)
        node = self._db.child(parent, decode_name(raw))
        if node is None:
            raise NotFound(f"no entry {raw!r}")
        return node

    def _child(self, parent: int, raw: bytes) -> Node:
        return self.resolve(self._name(parent, raw))

    def resolve(self, row: Node) -> Node:
        """The node a name shows: a hard link's file, else the row itself."""
        return self.node(row.link_inode) if row.is_link and row.link_inode else row

    def _entries_changed(self, folder: int, now: int) -> None:
        """A folder gained or lost a name: its mtime and ctime (the server sets the same
        from the instant the journal entry carries)."""
        self._db.update(folder, mtime_ns=now, ctime_ns=now)

    def _owner(self, parent: Node, caller: Caller, mode: int, is_dir: bool) -> dict:
        """Owner, group and mode of a new node: a setgid folder gives its group (and, to
        folders, its setgid bit), as on Linux."""
        gid = caller.gid
        if parent.mode & stat.S_ISGID:
            gid = self.owner_gid(parent)
            if is_dir:
                mode |= stat.S_ISGID
        return {"uid": caller.uid, "gid": gid, "mode": stat.S_IMODE(mode)}

    def owner_uid(self, node: Node) -> int:
        return os.getuid() if node.uid is None else node.uid

    def owner_gid(self, node: Node) -> int:
        return os.getgid() if node.gid is None else node.gid

    def _journal(self, op: str, inode: int, args: dict, other: int | None = None) -> None:
        seq = self._db.append(op, inode, args, other)
        log.debug("journal #%d %s inode %d other %s %s", seq, op, inode, other, args)
        self._on_journal()

    def _remember(self, node: Node) -> Node:
        self._lookups[node.inode] = self._lookups.get(node.inode, 0) + 1
        return node

    def _new_name(self, parent: int, raw: bytes) -> str:
        self._dir(parent)
        name = decode_name(raw)
        if self._db.child(parent, name) is not None:
            raise AlreadyExists(f"{name} exists")
        self._check_path_length(parent, raw)
        return name

    def _check_path_length(self, parent: int, raw: bytes) -> None:
        """The drive keeps paths of at most PATH_MAX bytes from its root: a name that would
        make a longer one is refused now (the server would refuse its replay)."""
        if len(self._db.path(parent).rstrip("/").encode()) + 1 + len(raw) > PATH_MAX:
            raise NameTooLong(f"the drive path would be longer than {PATH_MAX} bytes")

    def generation(self, inode: int) -> int:
        return self._gens.get(inode, 0)

    def has_handles(self, inode: int) -> bool:
        return any(handle.inode == inode for handle in self._handles.values())

    def has_writers(self, inode: int) -> bool:
        return any(h.inode == inode and h.writable for h in self._handles.values())

    # -- lookup counts and deletion -----------------------------------------------------------

    def lookup(self, parent: int, raw: bytes) -> Node:
        return self._remember(self.attrs(self._child(parent, raw).inode))

    def readdir_remember(self, inode: int) -> None:
        """Count the lookup the kernel makes for each entry readdir reported."""
        self._lookups[inode] = self._lookups.get(inode, 0) + 1

    def forget(self, inode: int, count: int) -> None:
        left = self._lookups.get(inode, 0) - count
        if left > 0:
            self._lookups[inode] = left
            return
        self._lookups.pop(inode, None)
        self.collect(inode)

    def detach(self, node: Node) -> None:
        """Take a node out of the tree; delete it now unless the kernel or a handle holds it."""
        if node.is_dir:
            for child in self._db.children(node.inode, limit=1_000_000):
                self.detach(child)
        self._db.update(node.inode, parent=None, ctime_ns=time.time_ns())
        if node.inode not in self._lookups and not self.has_handles(node.inode):
            self._purge(node.inode)

    def collect(self, inode: int) -> None:
        """Delete a detached node once nothing holds it: no kernel lookup, handle or journal
        entry (a row kept for its pending entries shields it from stale remote echoes)."""
        node = self._db.get(inode)
        detached = node is not None and node.parent is None and inode != ROOT_INODE
        if detached and inode not in self._lookups:
            self._purge(inode)

    def _purge(self, inode: int) -> None:
        if self.has_handles(inode) or self._db.has_pending(inode):
            return
        self._db.delete(inode)
        self.content.dirty.remove(inode)
        for table in (self._gens, self._flushed, self._mtimes, self._held):
            table.pop(inode, None)
        self.acknowledged.forget(inode)

    # -- attributes ---------------------------------------------------------------------------

    async def setattr(
        self,
        inode: int,
        mode: int | None,
        size: int | None,
        mtime_ns: int | None,
        owner: tuple[int | None, int | None] = (None, None),
        atime_ns: int | None = None,
    ) -> Node:
        """chmod, chown, truncate, utimes. The kernel checked who may (default_permissions)
        and computed the mode chown leaves (setuid/setgid cleared on files). Every call
        changes ctime; only what differs is journaled (tar chmods to the same mode)."""
        node = self.attrs(inode)
        if size is not None:
            await self._truncate(node, size)
        changes: dict = {}
        if mode is not None and stat.S_IMODE(mode) != node.mode:
            changes["mode"] = stat.S_IMODE(mode)
        uid, gid = owner
        if uid is not None and uid != self.owner_uid(node):
            changes["uid"] = uid
        if gid is not None and gid != self.owner_gid(node):
            changes["gid"] = gid
        if mtime_ns is not None:
            changes["mtime_ns"] = mtime_ns
            self._mtimes.pop(inode, None)
        if atime_ns is not None:
            changes["atime_ns"] = atime_ns
        asked = mode is not None or uid is not None or gid is not None
        if changes or asked:
            self._change_attributes(inode, changes)
        return self.attrs(inode)

    def _change_attributes(self, inode: int, changes: dict) -> None:
        """Apply attribute changes with a new ctime, and journal them for the server; on a
        file with writes not yet acknowledged, hold them until its close, which acknowledges
        them with the data (tar sets mtime, owner and mode on every file it writes, before
        closing it: no commit and no journal entry each)."""
        if self._carried_by_close(inode):
            self._held[inode] = {**self._held.get(inode, {}), **changes}
            self._held[inode]["ctime_ns"] = time.time_ns()
            return
        with self._db.transaction():
            self._db.update(inode, ctime_ns=time.time_ns(), **changes)
            if changes and self._db.get(inode).parent is not None:
                self._journal("setattr", inode, {"path": self._db.path(inode), **changes})

    def _carried_by_close(self, inode: int) -> bool:
        """Whether a close still to come journals an upload of `inode`: it has writes not
        acknowledged yet and a handle open for writing."""
        unacknowledged = self._gens.get(inode, 0) != self._flushed.get(inode, 0)
        return unacknowledged and self.has_writers(inode)

    async def _truncate(self, node: Node, size: int, commit: bool = True) -> None:
        """Truncate; `commit` journals the upload now (an open's O_TRUNC leaves it to close)."""
        if node.is_dir:
            raise IsADirectory("cannot truncate a folder")
        if node.type != "file":
            raise FsError(errno.EINVAL, "not a regular file")
        if size > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG, f"files hold at most {MAX_FILE_SIZE} bytes")
        async with self.content.lock(node.inode):
            await self._begin_change(node.inode, keep=size > 0, start=size)
            self.content.truncate(node.inode, size)
            self._touch(node.inode)
        if commit:
            await self.commit_content(node.inode)

    async def _start_writing(self, inode: int, keep: bool, start: int) -> None:
        """Before the first change after an acknowledgement (`start` is the lowest byte it
        touches): give a clean file its dirty copy (with its content when `keep`), keep
        acknowledged content that is not uploaded yet, and note durably that the dirty copy
        is being changed."""
        async with self.content.lock(inode):
            await self._begin_change(inode, keep, start)

    async def _begin_change(self, inode: int, keep: bool, start: int) -> None:
        """The body of `_start_writing`, for callers that hold the content lock."""
        node = self.node(inode)
        if (node.dirty and node.modified) or self._grows(node, start, locked=True):
            return
        dirty = self.content.dirty
        pending = node.dirty and self._db.has_pending_upload(inode)
        if not pending and dirty.has_preserved_file(inode):
            # The acknowledged content is the server's revision the mirror names: a preserved
            # copy left on the disk holds an older version (superseded, its removal waiting
            # for the durability of what superseded it, or left by a crash) and must not be
            # what a crash during this change goes back to.
            await trio.to_thread.run_sync(dirty.drop_preserved_durably, inode)
        if not node.dirty:
            await self.content.materialise(node, keep)
            self._read_dirty_copy(node)
        else:
            self.acknowledged.rewriting(inode)
            if pending and dirty.exists(inode):
                await trio.to_thread.run_sync(dirty.preserve, inode, node.size)
        with self._db.transaction():
            self._db.update(inode, dirty=1, modified=1)
        if self.durability.must_note(inode):
            await self.durability.journal()
        self.durability.noted(inode)

    def _grows(self, node: Node, start: int, locked: bool = False) -> bool:
        """Whether a change starting at `start` only grows an acknowledged dirty copy: its
        acknowledged content stays the untouched prefix, so nothing needs keeping or noting.
        Without the content lock, only while no change or acknowledgement holds it."""
        inode = node.inode
        if not node.dirty or node.modified or start < node.size:
            return False
        if not locked and self.content.lock(inode).locked():
            return False
        if not self.acknowledged.growing(inode):
            if not self.content.dirty.exists(inode):
                return False
            self.acknowledged.grew(inode)
            self.durability.grew(inode)
        return True

    def _read_dirty_copy(self, node: Node) -> None:
        """Handles open on the revision the new dirty copy starts from read the copy from now
        on (they see the changes, as on a local file); handles pinned to an older revision
        (another client committed since they opened) keep reading that one."""
        for handle in self._handles.values():
            pinned = handle.revision
            if handle.inode == node.inode and pinned is not None and pinned.rev == node.rev:
                handle.revision = None

    def _touch(self, inode: int) -> None:
        self._gens[inode] = self._gens.get(inode, 0) + 1
        self._mtimes[inode] = time.time_ns()

    # -- directories --------------------------------------------------------------------------

    def opendir(self, inode: int) -> None:
        self._dir(inode)

    def readdir(self, inode: int, after: int) -> list[tuple[Node, Node]]:
        """A page of children as (row, what it shows): one query, and more only for dirty
        files and hard links, which show their file."""
        rows = self._db.children(inode, after, limit=256)
        shown = [self.attrs(row.inode) if row.dirty else self.resolve(row) for row in rows]
        return list(zip(rows, shown, strict=True))

    def _made(self, node: Node, op: str, args: dict) -> Node:
        """Journal the making of `node` with its path and note it in its folder."""
        self._journal(op, node.inode, {"path": self._db.path(node.inode), **args})
        self._entries_changed(node.parent, node.ctime_ns)
        return node

    def mkdir(self, parent: int, raw: bytes, mode: int, caller: Caller = ROOT) -> Node:
        name = self._new_name(parent, raw)
        owner = self._owner(self.node(parent), caller, mode, is_dir=True)
        with self._db.transaction():
            node = self._db.insert(parent, name, "dir", **owner)
            self._made(node, "mkdir", {"mode": node.mode, "mtime_ns": node.mtime_ns})
        return self._remember(node)

    def rmdir(self, parent: int, raw: bytes) -> None:
        node = self._name(parent, raw)
        if not node.is_dir:
            raise NotADirectory(f"{node.name} is not a folder")
        if self._db.has_children(node.inode):
            raise NotEmpty(f"{node.name} is not empty")
        now = time.time_ns()
        with self._db.transaction():
            self._journal("rmdir", node.inode, {"path": self._db.path(node.inode), "at": now})
            self.detach(node)
            self._entries_changed(parent, now)

    def unlink(self, parent: int, raw: bytes) -> None:
        row = self._name(parent, raw)
        if row.is_dir:
            raise IsADirectory(f"{row.name} is a folder")
        now = time.time_ns()
        with self._db.transaction():
            self._journal("unlink", row.inode, {"path": self._db.path(row.inode), "at": now})
            self._unname(row, now)
            self._entries_changed(parent, now)

    def _unname(self, row: Node, now: int) -> None:
        """Remove one name, as the server does (backend/metadata/posix.py): a hard link
        goes and its file changes; a file with other names takes the place of the first of
        them, which goes; else the node is detached."""
        if row.is_link:
            self.detach(row)
            if row.link_inode is not None:
                self._db.update(row.link_inode, ctime_ns=now)
            return
        heirs = [] if row.is_dir else self._db.links(row.inode)
        if not heirs:
            self.detach(row)
            return
        heir = heirs[0]
        self.detach(heir)
        self._db.update(row.inode, parent=heir.parent, name=heir.name, ctime_ns=now)

    def symlink(self, parent: int, raw: bytes, target: bytes, caller: Caller = ROOT) -> Node:
        name = self._new_name(parent, raw)
        try:
            text = target.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPathError("symlink target is not valid UTF-8") from None
        owner = self._owner(self.node(parent), caller, 0o777, is_dir=False)
        with self._db.transaction():
            node = self._db.insert(parent, name, "symlink", target=text, size=len(target), **owner)
            self._made(node, "symlink", {"target": text, "mtime_ns": node.mtime_ns})
        return self._remember(node)

    def mknod(
        self, parent: int, raw: bytes, kind: str, mode: int, rdev: int, caller: Caller
    ) -> Node:
        """A FIFO, socket or device: metadata only, synced like a symlink (the kernel
        refused devices to callers without CAP_MKNOD already)."""
        name = self._new_name(parent, raw)
        owner = self._owner(self.node(parent), caller, mode, is_dir=False)
        with self._db.transaction():
            node = self._db.insert(parent, name, kind, rdev=rdev, **owner)
            args = {"type": kind, "mode": node.mode, "rdev": rdev, "mtime_ns": node.mtime_ns}
            self._made(node, "mknod", args)
        return self._remember(node)

    def link(self, inode: int, new_parent: int, raw: bytes) -> Node:
        """A second name for a file (link(2)); folders cannot have one (EPERM)."""
        node = self.node(inode)
        if node.is_dir:
            raise FsError(errno.EPERM, "a folder cannot have a second name")
        if node.parent is None and inode != ROOT_INODE:
            raise NotFound("the file has no name left")
        name = self._new_name(new_parent, raw)
        now = time.time_ns()
        with self._db.transaction():
            row = self._db.insert(new_parent, name, "hardlink", node.mode, link_inode=inode)
            args = {"src": self._db.path(inode), "dst": self._db.path(row.inode), "at": now}
            # `other` names the file: its create or upload before this entry is then never
            # skipped for a later upload, so the server has the file before its new name.
            self._journal("link", row.inode, args, inode)
            self._db.update(inode, ctime_ns=now)
            self._entries_changed(new_parent, now)
        return self._remember(self.attrs(inode))

    def readlink(self, inode: int) -> bytes:
        node = self.node(inode)
        if node.type != "symlink" or node.target is None:
            raise FsError(errno.EINVAL, "not a symlink")
        return node.target.encode("utf-8")

    # -- rename -------------------------------------------------------------------------------

    def rename(
        self, old_parent: int, old_raw: bytes, new_parent: int, new_raw: bytes, mode: str
    ) -> None:
        """rename(2): mode is 'replace', 'noreplace' or 'exchange', as the API names them.
        A name moved onto another name of the same file changes nothing."""
        source = self._name(old_parent, old_raw)
        self._dir(new_parent)
        new_name = decode_name(new_raw)
        self._check_path_length(new_parent, new_raw)
        target = self._db.child(new_parent, new_name)
        if target is not None and self.resolve(target).inode == self.resolve(source).inode:
            return
        if mode == "noreplace" and target is not None:
            raise AlreadyExists(f"{new_name} exists")
        if mode == "exchange" and target is None:
            raise NotFound(f"no entry {new_name}")
        if source.is_dir and self._db.is_ancestor(source.inode, new_parent):
            raise FsError(errno.EINVAL, "cannot move a folder into itself")
        if mode == "exchange":
            if target.is_dir and self._db.is_ancestor(target.inode, old_parent):
                raise FsError(errno.EINVAL, "cannot move a folder into itself")
            self._exchange(source, target)
            return
        if target is not None:
            self._check_replace(source, target)
        now = time.time_ns()
        with self._db.transaction():
            args = {
                "src": self._db.path(source.inode),
                "dst": self._db.path(new_parent).rstrip("/") + "/" + new_name,
                "mode": mode,
                "at": now,
            }
            self._journal("rename", source.inode, args, other=target and target.inode)
            if target is not None:
                self._unname(target, now)
            self._db.update(source.inode, parent=new_parent, name=new_name)
            self._moved(source, now)
            self._entries_changed(old_parent, now)
            self._entries_changed(new_parent, now)

    def _moved(self, row: Node, now: int) -> None:
        """A moved name's file changes (its ctime, as Linux filesystems set it)."""
        self._db.update(self.resolve(row).inode, ctime_ns=now)

    def _check_replace(self, source: Node, target: Node) -> None:
        if target.is_dir and not source.is_dir:
            raise IsADirectory(f"{target.name} is a folder")
        if source.is_dir and not target.is_dir:
            raise NotADirectory(f"{target.name} is not a folder")
        if target.is_dir and self._db.has_children(target.inode):
            raise NotEmpty(f"{target.name} is not empty")

    def _exchange(self, source: Node, target: Node) -> None:
        now = time.time_ns()
        with self._db.transaction():
            args = {
                "src": self._db.path(source.inode),
                "dst": self._db.path(target.inode),
                "mode": "exchange",
                "at": now,
            }
            self._journal("rename", source.inode, args, other=target.inode)
            self._db.update(target.inode, parent=None)
            self._db.update(source.inode, parent=target.parent, name=target.name)
            self._db.update(target.inode, parent=source.parent, name=source.name)
            for row in (source, target):
                self._moved(row, now)
                self._entries_changed(row.parent, now)

    # -- files --------------------------------------------------------------------------------

    def create(
        self, parent: int, raw: bytes, mode: int, flags: int, caller: Caller = ROOT
    ) -> tuple[int, Node]:
        name = self._new_name(parent, raw)
        owner = self._owner(self.node(parent), caller, mode, is_dir=False)
        with self._db.transaction():
            node = self._db.insert(parent, name, "file", dirty=1, modified=1, **owner)
            self.content.dirty.create_empty(node.inode)
            self._made(node, "create", {"mode": node.mode, "mtime_ns": node.mtime_ns})
        return self._open_handle(node.inode, writable=True), self._remember(node)

    async def open(self, inode: int, flags: int) -> tuple[int, bool]:
        """Open a file; answers (handle, keep_cache). O_TRUNC arrives here (atomic_o_trunc)."""
        node = self.node(inode)
        if node.is_dir:
            raise IsADirectory("cannot open a folder as a file")
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if writable and flags & os.O_TRUNC and node.type == "file":
            await self._truncate(node, 0, commit=False)  # holds the content lock meanwhile
        fh = self._open_handle(inode, writable)
        keep_cache = inode not in self.stale
        self.stale.discard(inode)
        return fh, keep_cache

    def _open_handle(self, inode: int, writable: bool) -> int:
        node = self.node(inode)
        revision = None if node.dirty else Revision(node.remote_id, node.rev, node.size)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = Handle(inode, writable, revision)
        self.content.dirty.acquire(inode)
        return fh

    def _handle(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise FsError(errno.EBADF, "unknown file handle")
        return handle

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handle(fh)
        if handle.next_offset < 0:
            self._accessed(handle.inode)
        # Noted as the read arrives, not as it ends: the kernel's read-ahead sends the next
        # ranges before the first is answered, and they are sequential all the same.
        sequential = offset == handle.next_offset
        handle.next_offset = offset + size
        return await self.content.read(handle.inode, handle.revision, offset, size, sequential)

    def _accessed(self, inode: int) -> None:
        """relatime, at a handle's first read: atime moves when it is not after the last
        change or is a day old. Kept in the mirror; it reaches the server with the node's
        next change (a read sends nothing)."""
        node = self.node(inode)
        now = time.time_ns()
        atime = node.atime_ns or 0
        if atime <= max(node.mtime_ns, node.ctime_ns) or now - atime > ATIME_REFRESH_NS:
            self._db.update(inode, atime_ns=now)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        if not handle.writable:
            raise FsError(errno.EBADF, "file not open for writing")
        if offset + len(data) > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG, f"files hold at most {MAX_FILE_SIZE} bytes")
        node = self.node(handle.inode)
        if not (node.dirty and node.modified) and not self._grows(node, offset):
            await self._start_writing(handle.inode, keep=True, start=offset)
        written = self.content.write(handle.inode, offset, data)
        self._touch(handle.inode)
        return written

    async def flush(self, fh: int, durable: bool = False) -> None:
        """What close (and with `durable`, fsync) returns: EDQUOT to a writer while the quota
        holds the upload back (the data is safe in the cache all the same, and goes up once
        space is freed)."""
        handle = self._handle(fh)
        await self.commit_content(handle.inode, durable)
        if handle.writable and self.usage.over and self._db.has_pending_upload(handle.inode):
            raise QuotaExceeded("the quota is full: the upload waits in the cache for space")

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        try:
            await self.commit_content(handle.inode)
        finally:
            self.content.dirty.release(handle.inode)
            node = self._db.get(handle.inode)
            if node is not None and handle.revision and handle.revision.rev != node.rev:
                self.stale.add(handle.inode)  # its reads put the old revision in the kernel
            if node is not None and node.parent is None and handle.inode not in self._lookups:
                self._purge(handle.inode)

    async def commit_content(self, inode: int, durable: bool = False) -> None:
        """Acknowledge written data and journal its upload: what close() promises, and with
        `durable` what fsync() promises (mountfs/durability.py). Holds the content lock
        throughout, so a flush and the release right after it (or a change starting on
        another handle) never interleave with an acknowledgement."""
        async with self.content.lock(inode):
            generation = self._gens.get(inode, 0)
            if self._flushed.get(inode, 0) == generation:
                if durable and not self.durability.power_safe(inode):
                    await self.durability.fsync(inode)
                return
            if durable:
                await self.durability.fsync_content(inode)
            node = self._db.get(inode)
            if node is None:
                return
            size = self.content.dirty.size(inode)
            held = self._held.pop(inode, {})
            mtime_ns = self._mtimes.pop(inode, held.pop("mtime_ns", node.mtime_ns))
            held["ctime_ns"] = time.time_ns()
            with self._db.transaction():
                self._db.update(inode, size=size, mtime_ns=mtime_ns, dirty=1, modified=0, **held)
                if node.parent is not None:
                    self._journal("upload", inode, {"path": self._db.path(inode)})
            # Before any await: the replayer may pick the entry up during the fsync, and must
            # send this content, not the older one preserved for a crash until it is durable.
            self.content.dirty.supersede_preserved(inode)
            self.acknowledged.settled(inode)
            self._flushed[inode] = generation
            if durable:
                await self.durability.acknowledged(inode)
            else:
                self.durability.closed(inode)

    # -- extended attributes ------------------------------------------------------------------

    def getxattr(self, inode: int, raw: bytes, caller: Caller = ROOT) -> bytes:
        name = raw.decode("utf-8", "surrogateescape")
        node = self.node(inode)
        if name == STATUS_XATTR:
            return self.status(node).encode()
        if name not in node.xattrs or not _may_see(name, caller):
            raise FsError(errno.ENODATA, f"no attribute {name}")
        return base64.b64decode(node.xattrs[name])

    def listxattr(self, inode: int, caller: Caller = ROOT) -> list[bytes]:
        names = self.node(inode).xattrs
        return [name.encode("utf-8") for name in names if _may_see(name, caller)]

    def setxattr(self, inode: int, raw: bytes, value: bytes | None, caller: Caller = ROOT) -> None:
        """Set (or with None remove) an attribute of a namespace the server keeps."""
        node = self.attrs(inode)
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FsError(errno.EINVAL, "attribute name is not UTF-8") from None
        if len(raw) > NAME_MAX:
            raise FsError(errno.ERANGE, "attribute name too long")
        if not name.startswith(XATTR_PREFIXES) or name.endswith("."):
            raise FsError(errno.EOPNOTSUPP, f"{name}: namespace not supported")
        if not _may_see(name, caller):
            raise FsError(errno.EPERM, "trusted.* attributes are for root")
        if name.startswith(_RESERVED_XATTR_PREFIX):
            raise FsError(errno.EPERM, f"{name} is read-only")
        if value is not None and len(value) > XATTR_VALUE_MAX:
            raise FsError(errno.E2BIG, "attribute value too large")
        if value is None and name not in node.xattrs:
            raise FsError(errno.ENODATA, f"no attribute {name}")
        with self._db.transaction():
            if name == acl.ACCESS and value is not None:
                mode, extended = acl.apply_to_mode(value, node.mode)
                if mode != node.mode:
                    self._change_attributes(node.inode, {"mode": mode})
                if not extended:  # just a mode: nothing to keep (a stored one goes)
                    if name not in node.xattrs:
                        return
                    value = None
            self._set_xattr(node, name, value)

    def _set_xattr(self, node: Node, name: str, value: bytes | None) -> None:
        xattrs = dict(self.node(node.inode).xattrs)
        encoded = None if value is None else base64.b64encode(value).decode("ascii")
        if encoded is None:
            del xattrs[name]
        else:
            xattrs[name] = encoded
        self._db.update(node.inode, xattrs=xattrs, ctime_ns=time.time_ns())
        if node.parent is not None or node.inode == ROOT_INODE:
            args = {"path": self._db.path(node.inode), "name": name, "value": encoded}
            self._journal("xattr", node.inode, args)

    def status(self, node: Node) -> str:
        if self._db.has_pending(node.inode):
            over = self.usage.over and self._db.has_pending_upload(node.inode)
            return "over-quota" if over else "pending"
        return "conflict" if node.conflict else "synced"

    def statfs(self) -> tuple[int, int, int | None]:
        """(nodes, bytes used, bytes in all or None when unknown): the server's usage and
        quota (or capacity) once it has told them, else what the mirror holds."""
        files, used = self._db.totals()
        if self.usage.used is None:
            return files, used, None
        return files, self.usage.used, self.usage.total
