"""Drive paths up to 8,192 bytes from the drive's root: the path columns of upload sessions
and revoked shares widen to match (docs/client.md, Paths).

SQLite cannot widen a column in place, so both tables are copied; the upload blocks of open
sessions, which the copy of `upload_sessions` would take with it (ON DELETE CASCADE), are
kept aside and put back.

Revision ID: 0012
Revises: 0008, 0011
Create Date: 2026-12-05 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: tuple[str, ...] = ("0008", "0011")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _widen(old: int, new: int) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMP TABLE kept_upload_blocks AS SELECT * FROM upload_blocks")
    _resize("upload_sessions", "path", False, old, new)
    if sqlite:
        op.execute("INSERT INTO upload_blocks SELECT * FROM kept_upload_blocks")
        op.execute("DROP TABLE kept_upload_blocks")
    _resize("shares", "mount_path", True, old, new)


def _resize(table: str, column: str, nullable: bool, old: int, new: int) -> None:
    with op.batch_alter_table(table) as batch:
        batch.alter_column(
            column,
            existing_type=sa.String(length=old),
            type_=sa.String(length=new),
            existing_nullable=nullable,
        )


def upgrade() -> None:
    _widen(4096, 8192)


def downgrade() -> None:
    _widen(8192, 4096)
