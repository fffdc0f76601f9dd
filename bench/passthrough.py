"""A pyfuse3 filesystem that passes every request through to a local directory.

It is the ceiling of any filesystem built on pyfuse3 and trio on this machine: the same FUSE
binding and event loop as the Cirrus mount, but no mirror, journal, cache or upload behind a
request, only the system call it maps to (no fsync at close either). The harness runs it as the
`pyfuse3` target so that every figure of the Cirrus mount can be compared with what the binding
alone reaches in the same run.

    python -m bench.passthrough SOURCE MOUNTPOINT
"""

import errno
import os
import stat
import sys

import pyfuse3
import trio

TIMEOUT = 60.0  # like the Cirrus mount's attribute and entry timeouts


class Passthrough(pyfuse3.Operations):
    """Inodes are the source directory's inode numbers; each maps to one path."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, source: str) -> None:
        super().__init__()
        self._paths = {pyfuse3.ROOT_INODE: source}
        self._fds: set[int] = set()  # descriptors this filesystem opened

    def _path(self, inode: int) -> str:
        path = self._paths.get(inode)
        if path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return path

    def _entry(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        inode = pyfuse3.ROOT_INODE if path == self._paths[pyfuse3.ROOT_INODE] else st.st_ino
        self._paths[inode] = path
        entry = pyfuse3.EntryAttributes()
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks"):
            setattr(entry, name, getattr(st, name))
        entry.st_ino = inode
        entry.st_blksize = 4096
        entry.st_atime_ns, entry.st_mtime_ns = st.st_atime_ns, st.st_mtime_ns
        entry.st_ctime_ns = st.st_ctime_ns
        entry.attr_timeout = entry.entry_timeout = TIMEOUT
        return entry

    def _child(self, parent: int, name: bytes) -> str:
        return os.path.join(self._path(parent), os.fsdecode(name))

    @staticmethod
    def _call(function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None

    async def lookup(self, parent_inode, name, ctx=None):
        return self._entry(self._child(parent_inode, name))

    async def getattr(self, inode, ctx=None):
        return self._entry(self._path(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self._path(inode)
        if fields.update_size:
            self._call(os.truncate, path, attr.st_size)
        if fields.update_mode:
            self._call(os.chmod, path, stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            self._call(os.lchown, path, uid, gid)
        if fields.update_atime or fields.update_mtime:
            st = self._call(os.lstat, path)
            atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            self._call(os.utime, path, None, ns=(atime, mtime), follow_symlinks=False)
        return self._entry(path)

    async def readlink(self, inode, ctx):
        return os.fsencode(self._call(os.readlink, self._path(inode)))

    async def opendir(self, inode, ctx):
        self._path(inode)
        return inode

    async def readdir(self, fh, start_id, token):
        path = self._path(fh)
        names = sorted(self._call(os.listdir, path))
        for index, name in enumerate(names[start_id:], start_id + 1):
            entry = self._entry(os.path.join(path, name))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry, index):
                return

    async def mkdir(self, parent_inode, name, mode, ctx):
        path = self._child(parent_inode, name)
        self._call(os.mkdir, path, stat.S_IMODE(mode))
        return self._entry(path)

    async def rmdir(self, parent_inode, name, ctx):
        self._call(os.rmdir, self._child(parent_inode, name))

    async def unlink(self, parent_inode, name, ctx):
        self._call(os.unlink, self._child(parent_inode, name))

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        self._call(os.rename, old, new)
        self._entry(new)

    async def symlink(self, parent_inode, name, target, ctx):
        path = self._child(parent_inode, name)
        self._call(os.symlink, os.fsdecode(target), path)
        return self._entry(path)

    async def create(self, parent_inode, name, mode, flags, ctx):
        path = self._child(parent_inode, name)
        fd = self._call(os.open, path, flags | os.O_CREAT, stat.S_IMODE(mode))
        self._fds.add(fd)
        return pyfuse3.FileInfo(fh=fd), self._entry(path)

    async def open(self, inode, flags, ctx):
        fd = self._call(os.open, self._path(inode), flags & ~(os.O_CREAT | os.O_DIRECT))
        self._fds.add(fd)
        return pyfuse3.FileInfo(fh=fd)

    async def read(self, fh, off, size):
        return self._call(os.pread, fh, size, off)

    async def write(self, fh, off, buf):
        return self._call(os.pwrite, fh, buf, off)

    async def flush(self, fh):
        return None

    async def fsync(self, fh, datasync):
        self._call(os.fdatasync if datasync else os.fsync, fh)

    async def release(self, fh):
        if fh in self._fds:
            self._fds.remove(fh)
            os.close(fh)

    async def getxattr(self, inode, name, ctx):
        raise pyfuse3.FUSEError(errno.ENODATA)

    async def statfs(self, ctx):
        st = self._call(os.statvfs, self._path(pyfuse3.ROOT_INODE))
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail"):
            setattr(data, name, getattr(st, name))
        for name in ("f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(data, name, getattr(st, name))
        return data


async def serve(source: str, mountpoint: str) -> None:
    options = set(pyfuse3.default_options) | {"fsname=passthrough"}
    pyfuse3.init(Passthrough(source), mountpoint, options)
    try:
        await pyfuse3.main()
    finally:
        pyfuse3.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.passthrough SOURCE MOUNTPOINT")
    trio.run(serve, os.path.abspath(sys.argv[1]), sys.argv[2])
