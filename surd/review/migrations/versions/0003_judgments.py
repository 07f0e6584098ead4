"""Stewards' judgements of evaluation pairs (baseline vs adapter, blinded).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "judgments",
        sa.Column("run", sa.String(200), primary_key=True),
        sa.Column("pair_id", sa.String(64), primary_key=True),
        sa.Column("steward", sa.String(128), primary_key=True),
        sa.Column("choice", sa.String(8), nullable=False),  # adapter | baseline | tie
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
