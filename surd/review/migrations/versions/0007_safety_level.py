"""Items carry their NSFW label on one scale (`surd.sources.safety`), to filter and blur by.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from surd.sources.safety import source_level

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("items") as b:
        b.add_column(sa.Column("safety_level", sa.Integer))
    items = sa.table("items", sa.column("sample_id"), sa.column("nsfw_level"), sa.column("safety_level"))
    conn = op.get_bind()
    labels = conn.execute(sa.select(items.c.nsfw_level).where(items.c.nsfw_level.is_not(None)).distinct())
    for (label,) in labels.all():
        conn.execute(
            items.update().where(items.c.nsfw_level == label).values(safety_level=source_level(label))
        )


def downgrade() -> None:
    with op.batch_alter_table("items") as b:
        b.drop_column("safety_level")
