"""The pyfuse3 Operations: thin adapters from FUSE requests to the VFS.

Each handler converts arguments, calls one VFS method and converts the answer; errors become
errno values in one place (`fuse_errors`). Requests about the read-only `.cirrus/` folder
(inodes and handles numbered above the mirror's) go to the virtual tree instead. Access
checks are the kernel's (`default_permissions`, and POSIX ACLs with `enable_acl`), made from
the owner, group and mode reported here; handlers that make nodes pass the caller, who owns
them.
"""

import errno
import os
import stat

import pyfuse3

from cache.metadb import ROOT_INODE, Node
from mountfs.errors import FsError, fuse_errors
from mountfs.shares import ReadOnlyShares
from mountfs.vfs import VFS, Caller
from mountfs.virtual import ENTRY_TIMEOUT, VirtualTree

# How long the kernel may keep names and attributes: every change the mirror learns from the
# server is invalidated explicitly (mountfs/kernel.py), so this only bounds what a missed
# invalidation could cost. Long enough that `rm -rf` or a second walk of a tree costs no
# LOOKUP or GETATTR per entry.
ATTR_TIMEOUT = 60.0
BLOCK_SIZE = 4096
# statfs: the quota (or the server's capacity) and usage from GET /v1/usage; until the server
# has answered, a large capacity and the files the mirror knows.
REPORTED_CAPACITY = 1 << 50
REPORTED_INODES = 1 << 32
_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "chr": stat.S_IFCHR,
    "blk": stat.S_IFBLK,
}
_SPECIAL_KINDS = {bits: kind for kind, bits in _TYPE_BITS.items() if kind not in ("dir", "symlink")}
_RENAME_MODES = {
    0: "replace",
    pyfuse3.RENAME_NOREPLACE: "noreplace",
    pyfuse3.RENAME_EXCHANGE: "exchange",
}


def _size(node: Node) -> int:
    """st_size as Linux reports it: a symlink's is the length of its target, a folder
    removed while open (still fstat-able through its descriptor) is empty."""
    if node.type == "symlink":
        return len((node.target or "").encode("utf-8"))
    if node.is_dir:
        return BLOCK_SIZE if node.parent is not None or node.inode == ROOT_INODE else 0
    return node.size


class CirrusOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = True

    def __init__(self, vfs: VFS, virtual: VirtualTree) -> None:
        super().__init__()
        self._vfs = vfs
        self._virtual = virtual
        self._shares = ReadOnlyShares(vfs)

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.inode
        entry.generation = 0
        timeout = ENTRY_TIMEOUT if self._virtual.owns(node.inode) else ATTR_TIMEOUT
        entry.entry_timeout = entry.attr_timeout = timeout
        entry.st_mode = _TYPE_BITS[node.type] | node.mode
        entry.st_nlink = self._vfs.nlink(node)
        entry.st_uid = self._vfs.owner_uid(node)
        entry.st_gid = self._vfs.owner_gid(node)
        entry.st_rdev = node.rdev
        entry.st_size = _size(node)
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = (entry.st_size + 511) // 512
        entry.st_atime_ns = node.atime_ns or node.mtime_ns
        entry.st_mtime_ns = node.mtime_ns
        entry.st_ctime_ns = node.ctime_ns
        return entry

    @fuse_errors
    async def lookup(self, parent_inode, name, ctx):
        if self._virtual.is_entry(parent_inode, name):
            return self._entry(await self._virtual.lookup(parent_inode, name))
        return self._entry(self._vfs.lookup(parent_inode, name))

    async def forget(self, inode_list):
        for inode, count in inode_list:
            if self._virtual.owns(inode):
                self._virtual.forget(inode)
            else:
                self._vfs.forget(inode, count)

    @fuse_errors
    async def getattr(self, inode, ctx):
        if self._virtual.owns(inode):
            return self._entry(self._virtual.attrs(inode))
        return self._entry(self._vfs.attrs(inode))

    @fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        self._refuse_virtual(inode)
        self._shares.refuse_on(inode)
        mode = attr.st_mode if fields.update_mode else None
        size = attr.st_size if fields.update_size else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        atime = attr.st_atime_ns if fields.update_atime else None
        owner = (
            attr.st_uid if fields.update_uid else None,
            attr.st_gid if fields.update_gid else None,
        )
        return self._entry(await self._vfs.setattr(inode, mode, size, mtime, owner, atime))

    @fuse_errors
    async def opendir(self, inode, ctx):
        if not self._virtual.owns(inode):
            self._vfs.opendir(inode)
        return inode

    @fuse_errors
    async def readdir(self, fh, start_id, token):
        if self._virtual.owns(fh):
            await self._readdir_virtual(fh, start_id, token)
            return
        while entries := self._vfs.readdir(fh, start_id):
            for row, node in entries:
                if not pyfuse3.readdir_reply(
                    token, row.name.encode(), self._entry(node), row.inode
                ):
                    return
                self._vfs.readdir_remember(node.inode)
                start_id = row.inode

    async def _readdir_virtual(self, inode: int, start: int, token) -> None:
        """Offsets are positions here; entries need no lookup count (the tree keeps them)."""
        for position, (name, node) in enumerate(await self._virtual.readdir(inode, start)):
            entry = self._entry(node)
            if not pyfuse3.readdir_reply(token, name.encode(), entry, start + position + 1):
                return

    def _refuse_virtual(self, inode: int) -> None:
        if self._virtual.owns(inode):
            raise FsError(errno.EROFS, ".cirrus is read-only")

    @fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        self._virtual.refuse_change(parent_inode, name)
        self._shares.refuse_in(parent_inode)
        return self._entry(self._vfs.mkdir(parent_inode, name, mode, _caller(ctx)))

    @fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        self._virtual.refuse_change(parent_inode, name)
        self._shares.refuse_in(parent_inode)
        self._vfs.rmdir(parent_inode, name)

    @fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        self._virtual.refuse_change(parent_inode, name)
        self._shares.refuse_in(parent_inode)
        self._vfs.unlink(parent_inode, name)

    @fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        self._virtual.refuse_change(parent_inode_old, name_old)
        self._virtual.refuse_change(parent_inode_new, name_new)
        self._shares.refuse_in(parent_inode_old)
        self._shares.refuse_in(parent_inode_new)
        mode = _RENAME_MODES.get(flags)
        if mode is None:
            raise FsError(errno.EINVAL, f"unsupported rename flags {flags:#x}")
        self._vfs.rename(parent_inode_old, name_old, parent_inode_new, name_new, mode)

    @fuse_errors
    async def symlink(self, parent_inode, name, target, ctx):
        self._virtual.refuse_change(parent_inode, name)
        self._shares.refuse_in(parent_inode)
        return self._entry(self._vfs.symlink(parent_inode, name, target, _caller(ctx)))

    @fuse_errors
    async def readlink(self, inode, ctx):
        return self._vfs.readlink(inode)

    @fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        self._refuse_virtual(inode)
        self._virtual.refuse_change(new_parent_inode, new_name)
        self._shares.refuse_in(new_parent_inode)
        return self._entry(self._vfs.link(inode, new_parent_inode, new_name))

    @fuse_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        self._virtual.refuse_change(parent_inode, name)
        self._shares.refuse_in(parent_inode)
        kind = _SPECIAL_KINDS.get(stat.S_IFMT(mode))
        if kind is None:
            raise FsError(errno.EINVAL, f"cannot make a node of type {stat.S_IFMT(mode):#o}")
        if kind == "file":  # mknod(2) of a regular file: an empty one
            fh, node = self._vfs.create(parent_inode, name, mode, os.O_WRONLY, _caller(ctx))
            await self._vfs.release(fh)
            return self._entry(node)
        rdev = rdev if kind in ("chr", "blk") else 0
        return self._entry(self._vfs.mknod(parent_inode, name, kind, mode, rdev, _caller(ctx)))

    @fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        self._virtual.refuse_change(parent_inode, name)
        self._shares.refuse_in(parent_inode)
        if not stat.S_ISREG(mode):
            raise FsError(errno.EPERM, "only regular files can be created")
        fh, node = self._vfs.create(parent_inode, name, mode, flags, _caller(ctx))
        return pyfuse3.FileInfo(fh=fh), self._entry(node)

    @fuse_errors
    async def open(self, inode, flags, ctx):
        if self._virtual.owns(inode):
            return pyfuse3.FileInfo(fh=await self._virtual.open(inode, flags), direct_io=True)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._shares.refuse_on(inode)
        fh, keep_cache = await self._vfs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    @fuse_errors
    async def read(self, fh, off, size):
        if self._virtual.owns_handle(fh):
            return await self._virtual.read(fh, off, size)
        return await self._vfs.read(fh, off, size)

    @fuse_errors
    async def write(self, fh, off, buf):
        return await self._vfs.write(fh, off, buf)

    @fuse_errors
    async def flush(self, fh):
        if not self._virtual.owns_handle(fh):
            await self._vfs.flush(fh)

    @fuse_errors
    async def fsync(self, fh, datasync):
        if not self._virtual.owns_handle(fh):
            await self._vfs.flush(fh, durable=True)

    @fuse_errors
    async def fsyncdir(self, fh, datasync):
        await self._vfs.durability.journal()

    @fuse_errors
    async def release(self, fh):
        if self._virtual.owns_handle(fh):
            self._virtual.release(fh)
        else:
            await self._vfs.release(fh)

    @fuse_errors
    async def statfs(self, ctx):
        files, used, total = self._vfs.statfs()
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        total = max(REPORTED_CAPACITY, used * 2) if total is None else total
        data.f_blocks = total // BLOCK_SIZE
        used_blocks = (used + BLOCK_SIZE - 1) // BLOCK_SIZE
        data.f_bfree = data.f_bavail = max(data.f_blocks - used_blocks, 0)
        data.f_files = REPORTED_INODES
        data.f_ffree = data.f_favail = REPORTED_INODES - files
        data.f_namemax = 255
        return data

    @fuse_errors
    async def getxattr(self, inode, name, ctx):
        if self._virtual.owns(inode):
            raise FsError(errno.ENODATA, "no attribute")
        return self._vfs.getxattr(inode, name, _caller(ctx))

    @fuse_errors
    async def listxattr(self, inode, ctx):
        return [] if self._virtual.owns(inode) else self._vfs.listxattr(inode, _caller(ctx))

    @fuse_errors
    async def setxattr(self, inode, name, value, ctx):
        self._refuse_virtual(inode)
        self._shares.refuse_on(inode)
        self._vfs.setxattr(inode, name, value, _caller(ctx))

    @fuse_errors
    async def removexattr(self, inode, name, ctx):
        self._refuse_virtual(inode)
        self._shares.refuse_on(inode)
        self._vfs.setxattr(inode, name, None, _caller(ctx))


def _caller(ctx: pyfuse3.RequestContext) -> Caller:
    return Caller(ctx.uid, ctx.gid)
