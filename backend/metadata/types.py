"""Plain values the metadata service hands to the API layer (no ORM objects leak out)."""

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

NodeType = Literal["file", "dir", "symlink", "fifo", "socket", "chr", "blk", "hardlink"]
MoveMode = Literal["replace", "noreplace", "exchange"]


def iso_from_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: resolved from the bearer token (and X-Cirrus-Device) on every request."""

    user_id: int
    user_name: str
    namespace_id: int
    device: str | None = None

    @property
    def author(self) -> str:
        """The name used for revision authorship and conflicted copies."""
        return self.device or self.user_name


@dataclass(frozen=True, slots=True)
class NodeInfo:
    id: int
    parent_id: int | None
    name: str
    path: str
    type: NodeType
    mode: int
    mtime_ns: int
    size: int
    rev: int
    head_rev: int
    target: str | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)
    deleted: bool = False
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    ctime_ns: int | None = None
    rdev: int = 0
    nlink: int = 1
    link_id: int | None = None

    @property
    def status(self) -> str:
        return "pending" if self.head_rev > self.rev else "uploaded"

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "name": self.name,
            "path": self.path,
            "type": self.type,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
            "modified": iso_from_ns(self.mtime_ns),
            "size": self.size,
            "rev": self.rev,
            "head_rev": self.head_rev,
            "status": self.status,
            "target": self.target,
            "xattrs": {k: base64.b64encode(v).decode() for k, v in self.xattrs.items()},
            "deleted": self.deleted,
            "uid": self.uid,
            "gid": self.gid,
            "atime_ns": self.atime_ns,
            "ctime_ns": self.ctime_ns,
            "rdev": self.rdev,
            "nlink": self.nlink,
            "link_id": self.link_id,
        }


@dataclass(frozen=True, slots=True)
class BlockRef:
    hash: str
    size: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class BlockList:
    id: int
    rev: int
    size: int
    blocks: list[BlockRef]
    archived: frozenset[str] = frozenset()  # hashes of blocks kept in the archive tier


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    rev: int
    size: int
    mtime_ns: int
    device: str
    status: str
    created_ns: int
    pinned: bool = False

    def to_json(self) -> dict:
        return {
            "rev": self.rev,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "modified": iso_from_ns(self.mtime_ns),
            "device": self.device,
            "status": self.status,
            "created": iso_from_ns(self.created_ns),
            "pinned": self.pinned,
        }


@dataclass(frozen=True, slots=True)
class CommitRequest:
    path: str
    base_rev: int | None
    size: int
    blocks: list[BlockRef]
    mode: int | None = None
    mtime_ns: int | None = None
    commit_id: str | None = None
    overwrite: bool = False  # simple uploads and restores: a new revision, never a conflict
    attrs: dict[str, int] = field(default_factory=dict)  # owner and times (posix.ATTRS)


@dataclass(frozen=True, slots=True)
class CommitResult:
    """A commit's outcome. `awaiting`: the revision whose awaited hashes are still to be read
    into `missing` once the write transaction is over (`revisions.listed`): half a million
    of them took a few hundred milliseconds to read, with every writer of the server waiting."""

    node: NodeInfo
    rev: int
    missing: list[str]
    conflict: bool
    path: str
    awaiting: int | None = None

    @property
    def status(self) -> str:
        return "pending" if self.missing or self.awaiting is not None else "uploaded"


@dataclass(frozen=True, slots=True)
class BatchOp:
    """One operation of a batch: `kind` names the single call, `args` its checked arguments
    (keyword names of the matching *_in function; a commit carries its CommitRequest)."""

    kind: Literal[
        "mkdir", "symlink", "move", "delete", "setattr", "xattr", "commit", "mknod", "link"
    ]
    args: dict[str, Any]
    seq: int | None = None  # the client's number for it: a repeat gets the first answer


@dataclass(frozen=True, slots=True)
class Change:
    cursor: int
    node: NodeInfo


@dataclass(frozen=True, slots=True)
class ChangesPage:
    entries: list[Change]
    cursor: int
    has_more: bool


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    cursor: int
    nodes: list[NodeInfo]
    has_more: bool


class Notifier(Protocol):
    """Told after every committed transaction that moved a namespace's journal forward.

    publish() is called from worker threads, must not block and must be thread-safe.
    """

    def publish(self, namespace_id: int, cursor: int) -> None: ...


@dataclass(frozen=True, slots=True)
class TrashItem:
    """A file or folder in the trash: its path when deleted, what it holds, who deleted it."""

    id: int
    path: str
    type: NodeType
    size: int  # bytes of the files in it
    files: int
    deleted_ns: int
    device: str | None  # the device (or user) that deleted it; None before the trash existed

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "path": self.path,
            "name": self.path.rsplit("/", 1)[-1],
            "type": self.type,
            "size": self.size,
            "files": self.files,
            "deleted": iso_from_ns(self.deleted_ns),
            "deleted_ns": self.deleted_ns,
            "device": self.device,
        }
