"""What one user may hold open in resumable uploads: sessions, spool space, and time.

A resumable session costs storage (its blocks in the block store, its tail in the
database) for as long as the session lives. Without a cap one user opened 2,000 sessions
of 64 GiB each in seconds and kept them for a week. Each user may now have `sessions`
sessions open at once (429 too_many_uploads beyond) announcing at most `spool_bytes`
together (507 upload_space_exceeded beyond: the announced sizes bound what the sessions can
hold), and a session nobody touches for `lifetime_s` seconds expires.
"""

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.db.models import UploadSession
from backend.protocol.errors import TooManyUploads, UploadSpaceExceeded

DEFAULT_SESSIONS = 32
DEFAULT_SPOOL_BYTES = 64 * 1024**3  # one file of the largest size
DEFAULT_LIFETIME_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class UploadLimits:
    sessions: int = DEFAULT_SESSIONS
    spool_bytes: int = DEFAULT_SPOOL_BYTES
    lifetime_s: int = DEFAULT_LIFETIME_S

    @property
    def lifetime_ns(self) -> int:
        return self.lifetime_s * 10**9

    def check_room(self, session: Session, namespace_id: int, total: int, now_ns: int) -> None:
        """Refuse a new session of `total` bytes when the drive's live ones leave no room."""
        count, announced = session.execute(
            select(func.count(), func.coalesce(func.sum(UploadSession.total_size), 0)).where(
                UploadSession.namespace_id == namespace_id, UploadSession.expires >= now_ns
            )
        ).one()
        if count >= self.sessions:
            raise TooManyUploads(
                f"at most {self.sessions} resumable uploads may be open at once; "
                "finish or cancel one first"
            )
        if announced + total > self.spool_bytes:
            raise UploadSpaceExceeded(
                f"open resumable uploads may announce at most {self.spool_bytes} bytes together"
            )
