"""Sessions that end (a per-account session key) and a login limiter shared by all workers.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("stewards") as batch:
        batch.add_column(sa.Column("session_key", sa.String(64)))
    op.create_table(
        "login_limits",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("login_limits")
    with op.batch_alter_table("stewards") as batch:
        batch.drop_column("session_key")
