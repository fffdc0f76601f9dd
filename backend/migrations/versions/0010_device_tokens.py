"""Device tokens: every token has a name, a last use and a revocation time; login codes.

A drive from before this migration has one token per user (the one create-user printed): it
is named "initial", was never seen used, and stays valid.

Revision ID: 0010
Revises: 0002
Create Date: 2026-12-04 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("name", sa.String(length=64), nullable=True))
    op.add_column("tokens", sa.Column("last_used", sa.BigInteger(), nullable=True))
    op.add_column("tokens", sa.Column("revoked", sa.BigInteger(), nullable=True))
    # The first token of each user is "initial"; any other gets a name from its id.
    op.execute(
        "UPDATE tokens SET name = CASE WHEN id = "
        "(SELECT MIN(t.id) FROM tokens t WHERE t.user_id = tokens.user_id) "
        "THEN 'initial' ELSE 'token-' || CAST(id AS VARCHAR(20)) END"
    )
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column("name", existing_type=sa.String(length=64), nullable=False)
    op.create_index(
        "uq_tokens_live_name",
        "tokens",
        ["user_id", "name"],
        unique=True,
        sqlite_where=sa.text("revoked IS NULL"),
        postgresql_where=sa.text("revoked IS NULL"),
    )
    op.create_table(
        "login_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("code_hash"),
    )


def downgrade() -> None:
    op.drop_table("login_codes")
    op.drop_index("uq_tokens_live_name", table_name="tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("revoked")
        batch.drop_column("last_used")
        batch.drop_column("name")
