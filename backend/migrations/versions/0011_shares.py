"""Shares: a folder of one drive shown in another user's drive, and public links
(docs/sharing.md).

A drive from before this migration has no shares and no links.

Revision ID: 0011
Revises: 0002
Create Date: 2026-12-04 19:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_namespace_id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("recipient_namespace_id", sa.Integer(), nullable=False),
        sa.Column("mount_id", sa.Integer(), nullable=False),
        sa.Column("access", sa.String(length=8), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.BigInteger(), nullable=True),
        sa.Column("mount_path", sa.String(length=4096), nullable=True),
        sa.ForeignKeyConstraint(["owner_namespace_id"], ["namespaces.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["folder_id"], ["nodes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["recipient_namespace_id"], ["namespaces.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["mount_id"], ["nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_shares_owner_namespace_id", "shares", ["owner_namespace_id"])
    op.create_index("ix_shares_recipient_namespace_id", "shares", ["recipient_namespace_id"])
    op.create_table(
        "links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespaces.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_links_namespace_id", "links", ["namespace_id"])


def downgrade() -> None:
    op.drop_index("ix_links_namespace_id", table_name="links")
    op.drop_table("links")
    op.drop_index("ix_shares_recipient_namespace_id", table_name="shares")
    op.drop_index("ix_shares_owner_namespace_id", table_name="shares")
    op.drop_table("shares")
