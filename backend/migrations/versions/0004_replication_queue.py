"""The durable queue of copies and deletes that block stores (regions, tiers) still owe,
and an index of revision_blocks by hash for the archive policy.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-04 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An existing drive starts with an empty queue: its blocks are where they were written.
    op.create_table(
        "replication_queue",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("store", sa.String(length=1024), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hash", "store"),
    )
    op.create_index("ix_replication_queue_next_try", "replication_queue", ["next_try"])
    # The archive policy asks, per candidate block, whether a current revision names it.
    op.create_index("ix_revision_blocks_hash", "revision_blocks", ["hash"])


def downgrade() -> None:
    op.drop_index("ix_revision_blocks_hash", table_name="revision_blocks")
    op.drop_index("ix_replication_queue_next_try", table_name="replication_queue")
    op.drop_table("replication_queue")
