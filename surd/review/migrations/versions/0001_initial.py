"""The first queue schema: items with one lease, decisions, stewards.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("sample_id", sa.String(32), primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("enqueued_at", TS, nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires", TS),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(32), sa.ForeignKey("items.sample_id"), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("actor_kind", sa.String(8), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("simple_prompt", sa.Text),
        sa.Column("previous_id", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_decisions_sample_id", "decisions", ["sample_id"])
    op.create_table("schema_info", sa.Column("version", sa.Integer, nullable=False))
    op.create_table(
        "stewards",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
