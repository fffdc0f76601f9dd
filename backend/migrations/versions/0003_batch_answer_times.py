"""When each kept batch answer was stored, so a drive's kept answers can be bounded by age.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Answers kept before this column existed count as the oldest (0): dropped first.
    with op.batch_alter_table("batch_answers") as table:
        table.add_column(
            sa.Column("created", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("batch_answers") as table:
        table.drop_column("created")
