"""Takedowns and release prunes: append-only logs of content removed on request.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "takedowns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32)),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "release_prunes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("release", sa.String(32), nullable=False),
        sa.Column("superseded_by", sa.String(32), nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("taken_down_rows", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("release_prunes")
    op.drop_table("takedowns")
