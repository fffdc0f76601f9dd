"""Trash, journal compaction and quotas.

Deleted nodes learn when, by whom and with which deleted folder they went; journal entries
their time; devices the newest cursor they read; drives how far their journal was trimmed
and the bytes they use; users a quota; and namespace_refs counts, per drive, the block-list
rows naming each hash.

An existing drive upgrades as if everything deleted before had been deleted now, by an
unknown device (the trash empties it after its usual delay): a deleted node whose folder is
live is an item of the trash, one below a deleted folder goes with that folder. Its journal
entries are dated now, and namespace_refs and used_bytes are counted from its revisions.

Revision ID: 0006
Revises: 0002
Create Date: 2026-12-04 15:30:00.000000
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    now = time.time_ns()
    op.add_column("users", sa.Column("quota", sa.BigInteger(), nullable=True))
    op.add_column("devices", sa.Column("cursor", sa.BigInteger(), nullable=True))
    for name in ("compacted", "used_bytes"):
        op.add_column(
            "namespaces",
            sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        )
    op.add_column("nodes", sa.Column("deleted_at", sa.BigInteger(), nullable=True))
    op.add_column("nodes", sa.Column("deleted_by", sa.String(length=64), nullable=True))
    op.add_column("nodes", sa.Column("trash_id", sa.Integer(), nullable=True))
    op.create_index("ix_nodes_deleted_at", "nodes", ["deleted_at"])
    op.add_column("changes", sa.Column("created", sa.BigInteger(), nullable=True))
    op.create_table(
        "namespace_refs",
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("refs", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("namespace_id", "hash"),
    )
    params = {"now": now}
    op.execute(sa.text("UPDATE changes SET created = :now").bindparams(**params))
    op.execute(sa.text("UPDATE nodes SET deleted_at = :now WHERE deleted").bindparams(**params))
    op.execute(
        "UPDATE nodes SET trash_id = id WHERE deleted AND (parent_id IS NULL OR parent_id IN "
        "(SELECT id FROM nodes AS folder WHERE NOT folder.deleted))"
    )
    op.execute(
        "INSERT INTO namespace_refs (namespace_id, hash, refs, size) "
        "SELECT revisions.namespace_id, revision_blocks.hash, COUNT(*), MAX(revision_blocks.size) "
        "FROM revision_blocks JOIN revisions ON revisions.id = revision_blocks.revision_id "
        "GROUP BY revisions.namespace_id, revision_blocks.hash"
    )
    op.execute(
        "UPDATE namespaces SET used_bytes = (SELECT COALESCE(SUM(size), 0) FROM namespace_refs "
        "WHERE namespace_refs.namespace_id = namespaces.id)"
    )


def downgrade() -> None:
    op.drop_table("namespace_refs")
    op.drop_column("changes", "created")
    op.drop_index("ix_nodes_deleted_at", table_name="nodes")
    for column in ("trash_id", "deleted_by", "deleted_at"):
        op.drop_column("nodes", column)
    for column in ("used_bytes", "compacted"):
        op.drop_column("namespaces", column)
    op.drop_column("devices", "cursor")
    op.drop_column("users", "quota")
