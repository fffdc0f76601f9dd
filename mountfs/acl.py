"""POSIX ACLs as the kernel hands them over in `system.posix_acl_access`.

With `enable_acl` the kernel enforces ACLs itself but leaves the filesystem to keep a file's
mode in step with its access ACL (as ext4 does): the owner, group (or mask) and other
entries *are* the permission bits. An ACL with nothing beyond those three entries is just a
mode and is not stored.

Format (Linux `posix_acl_xattr`): a little-endian u32 version (2), then per entry a u16 tag,
a u16 permission set (rwx = 4, 2, 1) and a u32 uid or gid.
"""

import errno
import struct

from mountfs.errors import FsError

ACCESS = "system.posix_acl_access"
_VERSION = 2
_ENTRY = struct.Struct("<HHI")
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def apply_to_mode(value: bytes, mode: int) -> tuple[int, bool]:
    """The mode an access ACL gives (setuid, setgid and sticky kept), and whether the ACL
    says more than the mode does (named users or groups: it must be kept)."""
    if len(value) < 4 or (len(value) - 4) % _ENTRY.size:
        raise FsError(errno.EINVAL, "malformed ACL")
    (version,) = struct.unpack_from("<I", value)
    if version != _VERSION:
        raise FsError(errno.EOPNOTSUPP, f"ACL version {version}")
    perms: dict[int, int] = {}
    extended = False
    for offset in range(4, len(value), _ENTRY.size):
        tag, perm, _id = _ENTRY.unpack_from(value, offset)
        if tag not in (_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER) or perm > 7:
            raise FsError(errno.EINVAL, "malformed ACL entry")
        extended |= tag in (_USER, _GROUP, _MASK)
        perms[tag] = perm
    if not all(tag in perms for tag in (_USER_OBJ, _GROUP_OBJ, _OTHER)):
        raise FsError(errno.EINVAL, "an ACL needs owner, group and other entries")
    group = perms.get(_MASK, perms[_GROUP_OBJ])
    bits = perms[_USER_OBJ] << 6 | group << 3 | perms[_OTHER]
    return (mode & 0o7000) | bits, extended
