"""Machine-readable error codes of the HTTP API, shared by server and client.

The server answers every failure with `{"error": {"code": CODE, "message": TEXT}}` and the
HTTP status below; the client maps the code (never the message) back to an exception and, on
the mount, to an errno. This table is the single place where that correspondence is written.

    CirrusError
     ├── InvalidRequest      400 invalid_request   (malformed input; EINVAL)
     ├── InvalidPathError    400 invalid_path      (bad path; EINVAL)
     ├── NameTooLong         400 name_too_long     (ENAMETOOLONG)
     ├── Unauthorized        401 unauthorized      (EACCES)
     ├── Forbidden           403 forbidden         (EACCES)
     ├── NotFound            404 not_found         (ENOENT)
     ├── AlreadyExists       409 exists            (EEXIST)
     ├── NotEmpty            409 not_empty         (ENOTEMPTY)
     ├── NotADirectory       409 not_a_directory   (ENOTDIR)
     ├── IsADirectory        409 is_a_directory    (EISDIR)
     ├── InvalidMove         409 invalid_move      (EINVAL: a folder into itself)
     ├── RevisionPending     409 revision_pending  (EAGAIN: blocks not all uploaded yet)
     ├── PayloadTooLarge     413 too_large         (EFBIG)
     ├── RangeNotSatisfiable 416 bad_range         (EINVAL)
     ├── HashMismatch        422 hash_mismatch     (EIO: the block is not what its name says)
     ├── BlockSizeMismatch   422 block_size_mismatch (EIO: a commit misstates a block's size)
     ├── TooManyUploads      429 too_many_uploads  (EAGAIN: resumable sessions per user)
     ├── TooManyRequests     429 too_many_requests (EAGAIN: requests in progress per user)
     ├── UploadSpaceExceeded 507 upload_space_exceeded (ENOSPC: resumable spool bytes per user)
     ├── InsufficientStorage 507 insufficient_storage (ENOSPC: the server's disk is full; retry)
     ├── DatabaseUnavailable 503 unavailable       (EIO: no database primary reachable; retry)
     ├── CursorExpired       410 cursor_expired    (EIO: the journal was trimmed past it)
     ├── QuotaExceeded       507 quota_exceeded    (EDQUOT: the user's quota is used up)
     ├── BlockBeingCollected 409 block_being_collected (EAGAIN: send the upload again)
     ├── CsrfRefused         403 csrf_refused      (EACCES: a web page request without its token)
     ├── StorageUnavailable  503 storage_unavailable (EIO: no region of the block store answers)
     └── BlockRestoring      503 restoring         (EAGAIN: an archived block is being restored;
                                                    Retry-After says when to ask again)
"""

import errno as _errno
from typing import ClassVar


class CirrusError(Exception):
    """Base of every error the API reports; subclasses fix the code, status and errno."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    errno: ClassVar[int] = _errno.EIO

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code.replace("_", " "))
        self.message = message or self.code.replace("_", " ")

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequest(CirrusError):
    code, status, errno = "invalid_request", 400, _errno.EINVAL


class InvalidPathError(CirrusError):
    code, status, errno = "invalid_path", 400, _errno.EINVAL


class NameTooLong(CirrusError):
    code, status, errno = "name_too_long", 400, _errno.ENAMETOOLONG


class Unauthorized(CirrusError):
    code, status, errno = "unauthorized", 401, _errno.EACCES


class Forbidden(CirrusError):
    code, status, errno = "forbidden", 403, _errno.EACCES


class NotFound(CirrusError):
    code, status, errno = "not_found", 404, _errno.ENOENT


class AlreadyExists(CirrusError):
    code, status, errno = "exists", 409, _errno.EEXIST


class NotEmpty(CirrusError):
    code, status, errno = "not_empty", 409, _errno.ENOTEMPTY


class NotADirectory(CirrusError):
    code, status, errno = "not_a_directory", 409, _errno.ENOTDIR


class IsADirectory(CirrusError):
    code, status, errno = "is_a_directory", 409, _errno.EISDIR


class InvalidMove(CirrusError):
    code, status, errno = "invalid_move", 409, _errno.EINVAL


class RevisionPending(CirrusError):
    code, status, errno = "revision_pending", 409, _errno.EAGAIN


class PayloadTooLarge(CirrusError):
    code, status, errno = "too_large", 413, _errno.EFBIG


class RangeNotSatisfiable(CirrusError):
    code, status, errno = "bad_range", 416, _errno.EINVAL


class HashMismatch(CirrusError):
    code, status, errno = "hash_mismatch", 422, _errno.EIO


class BlockSizeMismatch(CirrusError):
    code, status, errno = "block_size_mismatch", 422, _errno.EIO


class DatabaseUnavailable(CirrusError):
    """Not the request's fault: the database connection dropped (a failover under way) and
    the call could not safely be run again. Retrying later is the right answer."""

    code, status, errno = "unavailable", 503, _errno.EIO


class TooManyUploads(CirrusError):
    code, status, errno = "too_many_uploads", 429, _errno.EAGAIN


class TooManyRequests(CirrusError):
    code, status, errno = "too_many_requests", 429, _errno.EAGAIN


class UploadSpaceExceeded(CirrusError):
    code, status, errno = "upload_space_exceeded", 507, _errno.ENOSPC


class InsufficientStorage(CirrusError):
    code, status, errno = "insufficient_storage", 507, _errno.ENOSPC


class CursorExpired(CirrusError):
    """The change journal no longer holds the entries after this cursor: start again from
    a snapshot (GET /v1/snapshot)."""

    code, status, errno = "cursor_expired", 410, _errno.EIO


class QuotaExceeded(CirrusError):
    """The upload or commit would take the user past their quota; nothing was stored. A
    5xx status (507, as WebDAV answers), yet a refusal: retry once space is freed."""

    code, status, errno = "quota_exceeded", 507, _errno.EDQUOT


class BlockBeingCollected(CirrusError):
    """An upload kept meeting collections of its blocks; sending it again later succeeds."""

    code, status, errno = "block_being_collected", 409, _errno.EAGAIN


class CsrfRefused(CirrusError):
    """A state-changing request of the web page without its session's CSRF token, or sent
    from another site: a forgery, or a page too old to trust (reload it)."""

    code, status, errno = "csrf_refused", 403, _errno.EACCES


class StorageUnavailable(CirrusError):
    """The block store does not answer (every region of it): the request changed nothing
    and may be sent again later; the mount treats it like an unreachable server."""

    code, status, errno = "storage_unavailable", 503, _errno.EIO


class BlockRestoring(CirrusError):
    """An archived block is being restored from a cold storage class (S3 GLACIER): the
    answer is 503 with Retry-After; the mount waits and asks again instead of failing."""

    code, status, errno = "restoring", 503, _errno.EAGAIN
    DEFAULT_RETRY_S = 60

    def __init__(self, message: str = "", retry_after: int = DEFAULT_RETRY_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReadOnlyShare(CirrusError):
    """A change inside a folder shared with the caller read-only: only reads are allowed."""

    code, status, errno = "read_only_share", 403, _errno.EACCES


class CrossShareMove(CirrusError):
    """A move between a shared folder and the rest of the drive (or another share): they
    are different drives, so the item must be copied instead (mv does so on EXDEV)."""

    code, status, errno = "cross_share_move", 409, _errno.EXDEV


class UnknownUser(CirrusError):
    """A share names a user the server does not know."""

    code, status, errno = "unknown_user", 404, _errno.ENOENT


class LinkExpired(CirrusError):
    """A public link past its expiry: ask its owner for a new one."""

    code, status, errno = "link_expired", 410, _errno.EACCES


ERRORS_BY_CODE: dict[str, type[CirrusError]] = {
    cls.code: cls for cls in CirrusError.__subclasses__()
}


def from_json(status: int, body: object) -> CirrusError:
    """Rebuild the exception a server response describes (unknown codes become CirrusError)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code", "")
        message = str(body["error"].get("message", ""))
        return ERRORS_BY_CODE.get(code, CirrusError)(message)
    return CirrusError(f"HTTP {status}")
