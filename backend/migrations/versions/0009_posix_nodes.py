"""POSIX attributes on nodes: owner, group, access and change times, device number, link
count, and hard links (a second name is a node of type `hardlink` naming its inode).

Existing nodes keep no owner (NULL: a mount shows them as the mounting user's), their mtime
as atime and ctime, rdev 0 and one link.

Revision ID: 0009
Revises: 0002
Create Date: 2026-12-04 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    columns = [
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("gid", sa.BigInteger(), nullable=True),
        sa.Column("atime_ns", sa.BigInteger(), nullable=True),
        sa.Column("ctime_ns", sa.BigInteger(), nullable=True),
        sa.Column("rdev", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("nlink", sa.Integer(), server_default="1", nullable=False),
    ]
    if op.get_bind().dialect.name == "sqlite":
        # Plain ADD COLUMNs, the foreign key inline: a batch would copy and drop `nodes`,
        # which SQLite refuses (or cascades) while other tables' rows refer to it.
        for column in columns:
            op.add_column("nodes", column)
        op.execute(
            "ALTER TABLE nodes ADD COLUMN link_id INTEGER "
            "CONSTRAINT fk_nodes_link_id REFERENCES nodes (id)"
        )
    else:
        with op.batch_alter_table("nodes") as batch:
            for column in columns:
                batch.add_column(column)
            batch.add_column(sa.Column("link_id", sa.Integer(), nullable=True))
            batch.create_foreign_key("fk_nodes_link_id", "nodes", ["link_id"], ["id"])
    op.execute("UPDATE nodes SET atime_ns = mtime_ns, ctime_ns = mtime_ns")
    op.create_index("ix_nodes_link", "nodes", ["link_id"])


def downgrade() -> None:
    op.drop_index("ix_nodes_link", table_name="nodes")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_constraint("fk_nodes_link_id", type_="foreignkey")
        for column in ("link_id", "nlink", "rdev", "ctime_ns", "atime_ns", "gid", "uid"):
            batch.drop_column(column)
