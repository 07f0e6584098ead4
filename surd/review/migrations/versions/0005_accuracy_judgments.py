"""Semantic-accuracy judgements: the paper's question ("does the image show …?"), per image.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "accuracy_judgments",
        sa.Column("run", sa.String(200), primary_key=True),
        sa.Column("pair_id", sa.String(64), primary_key=True),
        sa.Column("steward", sa.String(128), primary_key=True),
        sa.Column("adapter_shows", sa.Boolean, nullable=False),
        sa.Column("baseline_shows", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("accuracy_judgments")
