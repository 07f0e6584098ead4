"""Audit items, filters, standing decisions, item outcomes and API tokens.

Existing decisions are kept verbatim; `standing` and each item's outcome are rebuilt by replaying
the log (undo rows remove the decision they name), so no decision is lost.

Revision ID: 0002
Revises: 0001
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("items") as b:
        b.add_column(sa.Column("source", sa.String(32)))
        b.add_column(sa.Column("margin", sa.Float))
        b.add_column(sa.Column("nsfw_level", sa.String(16)))
        b.add_column(sa.Column("needed", sa.Integer, nullable=False, server_default="1"))
        b.add_column(sa.Column("state", sa.String(8), nullable=False, server_default="open"))
        b.add_column(sa.Column("final_decision", sa.String(16)))
        b.add_column(sa.Column("final_reason", sa.String(64)))
        b.add_column(sa.Column("final_prompt", sa.Text))
        b.add_column(sa.Column("final_actor", sa.String(400)))
        b.add_column(sa.Column("final_actor_kind", sa.String(8)))
        b.add_column(sa.Column("final_at", TS))
        b.add_column(sa.Column("final_decision_id", sa.Integer))
    op.create_index("ix_items_claim", "items", ["state", "enqueued_at", "sample_id"])
    op.create_index("ix_items_lease", "items", ["lease_owner"])
    with op.batch_alter_table("decisions") as b:
        b.add_column(sa.Column("previous_decision", sa.String(16)))
        b.add_column(sa.Column("previous_reason", sa.String(64)))
        b.add_column(sa.Column("previous_prompt", sa.Text))
    op.create_index("ix_decisions_actor", "decisions", ["actor"])
    op.create_table(
        "standing",
        sa.Column("sample_id", sa.String(32), sa.ForeignKey("items.sample_id"), primary_key=True),
        sa.Column("actor", sa.String(128), primary_key=True),
        sa.Column("actor_kind", sa.String(8), nullable=False),
        sa.Column("decision_id", sa.Integer, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("simple_prompt", sa.Text),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_standing_actor", "standing", ["actor", "decision_id"])
    op.create_table(
        "tokens",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column(
            "steward", sa.String(128), sa.ForeignKey("stewards.name", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", TS, nullable=False),
    )
    conn = op.get_bind()
    items = sa.table(
        "items",
        sa.column("sample_id"),
        sa.column("payload"),
        sa.column("source"),
        sa.column("margin"),
        sa.column("nsfw_level"),
    )
    for sid, payload in conn.execute(sa.select(items.c.sample_id, items.c.payload)).all():
        p = json.loads(payload)
        margin = float(p["p_simple"]) - float(p["p_complex"]) if "p_simple" in p else None
        conn.execute(
            items.update()
            .where(items.c.sample_id == sid)
            .values(source=p.get("source"), margin=margin, nsfw_level=p.get("nsfw_level"))
        )
    from surd.review.outcome import rebuild_derived

    rebuild_derived(conn)
    op.drop_table("schema_info")
