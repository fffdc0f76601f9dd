"""Resumable upload sessions any server can continue: their bytes leave the server's disk.

A session's received bytes are now blocks in the block store (`upload_blocks`) plus the bytes
after the last cut (`upload_sessions.tail`). A session started before this migration has its
bytes in one server's spool, which no other server can read: it keeps its id but restarts
from byte 0 (`received` = 0), which the protocol lets a server do (the client asks for
progress and resends from what the answer says).

Revision ID: 0008
Revises: 0003, 0007 (the two branches meet here)
Create Date: 2026-12-04 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: tuple[str, ...] = ("0003", "0007")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("upload_sessions", sa.Column("tail", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE upload_sessions SET received = 0")
    op.create_table(
        "upload_blocks",
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["upload_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("upload_id", "offset"),
    )


def downgrade() -> None:
    op.drop_table("upload_blocks")
    op.drop_column("upload_sessions", "tail")
