"""Stewards at volume: each decision records the view it was made in (single, grid, api) and the
guideline version it was made under; comments and flags on items; the admins' bulk actions;
items carry the trained detector's NSFW score to blur and sort by, and their two prompts
lower-cased for text search (filled here for the items already queued).

Revision ID: 0008
Revises: 0007
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("decisions") as b:
        b.add_column(sa.Column("view", sa.String(16)))
        b.add_column(sa.Column("guideline_version", sa.String(64)))
    with op.batch_alter_table("items") as b:
        b.add_column(sa.Column("nsfw_detector", sa.Float))
        b.add_column(sa.Column("prompts", sa.Text))
    _fill_prompts()
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(32), sa.ForeignKey("items.sample_id"), nullable=False, index=True),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("flag", sa.Boolean, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
    )
    op.create_table(
        "admin_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("selection", sa.Text, nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
    )


def _fill_prompts() -> None:
    conn = op.get_bind()
    items = sa.table("items", sa.column("sample_id"), sa.column("payload"), sa.column("prompts"))
    rows = conn.execute(sa.select(items.c.sample_id, items.c.payload)).all()
    fill = items.update().where(items.c.sample_id == sa.bindparam("sid")).values(prompts=sa.bindparam("text"))
    for k in range(0, len(rows), 1000):
        conn.execute(
            fill,
            [{"sid": sid, "text": _searchable(json.loads(payload))} for sid, payload in rows[k : k + 1000]],
        )


def _searchable(payload: dict) -> str:  # as surd.review.queue.searchable (a migration keeps its own copy)
    return "\n".join(str(payload.get(k) or "") for k in ("simple_prompt", "complex_prompt")).lower()


def downgrade() -> None:
    op.drop_table("admin_actions")
    op.drop_table("comments")
    with op.batch_alter_table("items") as b:
        b.drop_column("prompts")
        b.drop_column("nsfw_detector")
    with op.batch_alter_table("decisions") as b:
        b.drop_column("guideline_version")
        b.drop_column("view")
