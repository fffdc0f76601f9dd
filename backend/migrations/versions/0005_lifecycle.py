"""Storage lifecycle: block collection claims and tombstones, pinned revisions, per-user
retention.

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-04 15:40:00.000000

Existing drives keep their data: blocks start unclaimed and not deleted, revisions unpinned,
and no user has a retention policy of their own (the server's applies).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("blocks") as batch:
        batch.add_column(sa.Column("deleting_since", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_blocks_unreferenced",
        "blocks",
        ["last_used"],
        sqlite_where=sa.text("refcount = 0"),
        postgresql_where=sa.text("refcount = 0"),
    )
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(
            sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "retention_policies",
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("max_revisions", sa.Integer(), nullable=True),
        sa.Column("max_age_s", sa.BigInteger(), nullable=True),
        sa.Column("thinning", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("namespace_id"),
    )


def downgrade() -> None:
    op.drop_table("retention_policies")
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("pinned")
    op.drop_index("ix_blocks_unreferenced", table_name="blocks")
    with op.batch_alter_table("blocks") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("deleting_since")
