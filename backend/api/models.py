"""Request bodies of the API, with the limits that keep every input inside what we can store.

Integers are bounded to 64 bits (what the database holds), strings and lists are capped, so a
malformed or hostile body is refused with 400 before any handler runs. Paths are only typed
here; their rules are checked by deps.check_path, which answers invalid_path/name_too_long.
"""

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from backend.protocol.chunking import MAX_BLOCK_SIZE, MIN_CHUNK
from backend.uploads import MAX_FILE_SIZE

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_MISSING_QUERY = 10_000
MAX_XATTR_VALUE = 64 * 1024
# Node ids a batch's delete may name as all it removes (a client's run of deletions).
MAX_DELETE_ONLY = 10_000
# A file of MAX_FILE_SIZE cut at the smallest chunk size, plus its short tail.
MAX_BLOCKS_PER_FILE = MAX_FILE_SIZE // MIN_CHUNK + 1

# OpenAPI description of an upload body: raw bytes, not JSON.
RAW_BODY = {
    "requestBody": {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    }
}


def _storable(text: str) -> str:
    """Refuse what no database column can hold: NUL bytes and lone surrogates."""
    if "\0" in text:
        raise ValueError("NUL bytes are not allowed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid UTF-8") from None
    return text


Text = Annotated[str, AfterValidator(_storable)]
BlockHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Mode = Annotated[int, Field(ge=0, le=0o7777)]
TimeNs = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Revision = Annotated[int, Field(ge=0, le=2**31 - 1)]


OwnerId = Annotated[int, Field(ge=0, le=2**32 - 2)]


class PosixIn(BaseModel):
    """Owner and times a change also sets (backend/metadata/posix.py); absent: unchanged,
    and the change's ctime is the server's clock."""

    uid: OwnerId | None = None
    gid: OwnerId | None = None
    atime_ns: TimeNs | None = None
    ctime_ns: TimeNs | None = None

    def posix(self) -> dict[str, int]:
        fields = ("uid", "gid", "atime_ns", "ctime_ns")
        return {key: getattr(self, key) for key in fields if getattr(self, key) is not None}


class BlockIn(BaseModel):
    hash: BlockHash
    size: int = Field(ge=1, le=MAX_BLOCK_SIZE)


class CommitIn(PosixIn):
    path: str
    base_rev: Revision | None = None
    size: int = Field(ge=0, le=MAX_FILE_SIZE)
    mode: Mode | None = None
    mtime_ns: TimeNs | None = None
    commit_id: Text | None = Field(None, min_length=1, max_length=64)
    blocks: list[BlockIn] = Field(max_length=MAX_BLOCKS_PER_FILE)


class RestoreIn(BaseModel):
    path: str
    rev: Revision


class MissingIn(BaseModel):
    hashes: list[BlockHash] = Field(max_length=MAX_MISSING_QUERY)


class MkdirIn(PosixIn):
    path: str
    mode: Mode | None = None
    mtime_ns: TimeNs | None = None
    parents: bool = False


class SymlinkIn(PosixIn):
    path: str
    target: Text = Field(min_length=1, max_length=4096)
    mtime_ns: TimeNs | None = None


class MoveIn(PosixIn):
    from_: str = Field(alias="from")
    to: str
    mode: Literal["replace", "noreplace", "exchange"] = "replace"


class DeleteIn(PosixIn):
    path: str
    recursive: bool = False


class SetattrIn(PosixIn):
    path: str
    mode: Mode | None = None
    mtime_ns: TimeNs | None = None


class XattrIn(PosixIn):
    path: str
    name: Text = Field(
        min_length=6, max_length=255, pattern=r"^(user\.|security\.|trusted\.|system\.posix_acl_)"
    )
    # base64 of at most MAX_XATTR_VALUE bytes
    value: str | None = Field(None, max_length=(MAX_XATTR_VALUE + 2) // 3 * 4)


class MknodIn(PosixIn):
    path: str
    type: Literal["fifo", "socket", "chr", "blk"]
    mode: Mode = 0o644
    rdev: int = Field(0, ge=0, le=INT64_MAX)
    mtime_ns: TimeNs | None = None


class LinkIn(PosixIn):
    from_: str = Field(alias="from")
    to: str


# -- a batch of namespace operations (POST /v1/batch) -----------------------------------------


class Tagged(BaseModel):
    """The client's own number for an operation: sent again, it gets its first answer."""

    seq: int | None = Field(None, ge=0, le=INT64_MAX)


class MkdirOp(MkdirIn, Tagged):
    op: Literal["mkdir"]


class SymlinkOp(SymlinkIn, Tagged):
    op: Literal["symlink"]


class MoveOp(MoveIn, Tagged):
    op: Literal["move"]


class DeleteOp(DeleteIn, Tagged):
    """`only`: the ids of every node the delete may remove (the folder's included); if
    anything else lives at or below the path, it is refused as `not_empty` and nothing
    goes. A client that deleted a folder's content name by name sends it as one recursive
    delete, and what another client added meanwhile is not deleted unseen."""

    op: Literal["delete"]
    only: list[Annotated[int, Field(ge=1, le=INT64_MAX)]] | None = Field(
        None, max_length=MAX_DELETE_ONLY
    )


class SetattrOp(SetattrIn, Tagged):
    op: Literal["setattr"]


class XattrOp(XattrIn, Tagged):
    op: Literal["xattr"]


class CommitOp(CommitIn):
    op: Literal["commit"]


class MknodOp(MknodIn, Tagged):
    op: Literal["mknod"]


class LinkOp(LinkIn, Tagged):
    op: Literal["link"]


BatchOpIn = Annotated[
    MkdirOp | SymlinkOp | MoveOp | DeleteOp | SetattrOp | XattrOp | CommitOp | MknodOp | LinkOp,
    Field(discriminator="op"),
]


class BatchIn(BaseModel):
    # The count is checked by the handler, which answers 413 rather than a validation 400.
    ops: list[BatchOpIn] = Field(min_length=1)
    stop_on_error: bool = False
    client: Text | None = Field(None, min_length=1, max_length=64)
