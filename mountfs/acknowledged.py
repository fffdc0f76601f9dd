"""Where a file's acknowledged content is while the file is written again.

What close() or fsync() acknowledged is what the uploader must send and what a crash goes
back to, even while the writer goes on. It is one of three things:

- nothing was written since: the whole dirty copy;
- the file only grew since (every write at or beyond the acknowledged size, the way logs and
  databases' journals grow): the dirty copy's first `node.size` bytes, which no write touches.
  An append then costs no copy and no note on the disk: after a crash the dirty copy is cut
  back to the acknowledged size (mountfs/vfs.py, recovery);
- it was changed below that size: the preserved copy made before the first such change
  (cache/dirty.py), or, when the server held the acknowledged content already, the
  server's revision.

The uploader reads the source it was given and then asks whether it stayed intact: a
preserved copy always does, a prefix as long as no change below the acknowledged size began
(that change preserves the prefix first, and the upload is made again from the copy), the
whole dirty copy as long as nothing was written.
"""

from collections.abc import Callable
from dataclasses import dataclass

from cache.dirty import DirtyFiles
from cache.metadb import Node


@dataclass(frozen=True, slots=True)
class Source:
    """The bytes an upload reads: the first `size` bytes of `path`, or all when None."""

    inode: int
    path: str
    size: int | None
    preserved: bool
    stamp: int  # changes below the size (a prefix), or the write generation (whole)


class Acknowledged:
    """Tracks which files only grew since their acknowledgement, and names upload sources."""

    def __init__(self, dirty: DirtyFiles, generation: Callable[[int], int]) -> None:
        self._dirty = dirty
        self._generation = generation
        self._grown: set[int] = set()
        self._rewrites: dict[int, int] = {}  # changes below the acknowledged size, per inode

    def growing(self, inode: int) -> bool:
        """Whether the file grew past its acknowledged content, which is still its prefix."""
        return inode in self._grown

    def grew(self, inode: int) -> None:
        self._grown.add(inode)

    def rewriting(self, inode: int) -> None:
        """A change below the acknowledged size begins: a prefix being read is torn."""
        self._grown.discard(inode)
        self._rewrites[inode] = self._rewrites.get(inode, 0) + 1

    def settled(self, inode: int) -> None:
        """A new acknowledgement covers everything written: the whole dirty copy again."""
        self._grown.discard(inode)

    def forget(self, inode: int) -> None:
        self._grown.discard(inode)
        self._rewrites.pop(inode, None)

    def source(self, node: Node) -> Source:
        """What an upload of `node`'s acknowledged content reads now."""
        inode = node.inode
        if self._dirty.has_preserved(inode):
            return Source(inode, self._dirty.preserved_path(inode), None, True, 0)
        if inode in self._grown:
            stamp = self._rewrites.get(inode, 0)
            return Source(inode, self._dirty.path(inode), node.size, False, stamp)
        return Source(inode, self._dirty.path(inode), None, False, self._generation(inode))

    def intact(self, source: Source) -> bool:
        """Whether what `source` read is still the acknowledged content it was then."""
        if source.preserved:
            return True
        if source.size is not None:
            return self._rewrites.get(source.inode, 0) == source.stamp
        return self._generation(source.inode) == source.stamp
