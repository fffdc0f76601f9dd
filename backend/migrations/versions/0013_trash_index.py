"""Index nodes by trash item: deleting a folder gathers the items its children made into its
own (backend/metadata/trash.py), which without it scans every node of the drive, the deleted
ones included, once per folder deleted.

Revision ID: 0013
Revises: 0006, 0012
Create Date: 2026-12-06 20:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: tuple[str, ...] = ("0006", "0012")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_nodes_trash", "nodes", ["trash_id"])


def downgrade() -> None:
    op.drop_index("ix_nodes_trash", table_name="nodes")
