"""The review database's tables (SQLAlchemy Core), at the newest migration.

`decisions` is the append-only audit log: who decided what, when, and what the value was before.
`standing` holds each steward's current decision per item and `items.state`/`final_*` the item's
outcome; both are derived from the log inside the same transaction that appends to it.
"""

from __future__ import annotations

import sqlalchemy as sa

meta = sa.MetaData()
UTC_TS = sa.DateTime(timezone=True)

items = sa.Table(
    "items",
    meta,
    sa.Column("sample_id", sa.String(32), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("enqueued_at", UTC_TS, nullable=False),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires", UTC_TS),
    sa.Column("source", sa.String(32)),
    sa.Column("margin", sa.Float),  # p_simple - p_complex
    sa.Column("nsfw_level", sa.String(16)),
    sa.Column("safety_level", sa.Integer),  # nsfw_level on one scale (surd.sources.safety); None: unlabelled
    sa.Column("nsfw_detector", sa.Float),  # the trained detector's score (surd.stages.nsfw); None: not scored
    sa.Column("prompts", sa.Text),  # the simple and complex prompts, lower-cased: what text search reads
    sa.Column("needed", sa.Integer, nullable=False, server_default="1"),  # 2 for an audit item
    sa.Column("state", sa.String(8), nullable=False, server_default="open"),  # open | final
    sa.Column("final_decision", sa.String(16)),
    sa.Column("final_reason", sa.String(64)),
    sa.Column("final_prompt", sa.Text),
    sa.Column("final_actor", sa.String(400)),
    sa.Column("final_actor_kind", sa.String(8)),
    sa.Column("final_at", UTC_TS),
    sa.Column("final_decision_id", sa.Integer),  # the latest decision the outcome rests on
    sa.Index("ix_items_claim", "state", "enqueued_at", "sample_id"),
    sa.Index("ix_items_lease", "lease_owner"),
)
decisions = sa.Table(
    "decisions",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sample_id", sa.String(32), sa.ForeignKey("items.sample_id"), nullable=False, index=True),
    sa.Column("actor", sa.String(128), nullable=False, index=True),
    sa.Column("actor_kind", sa.String(8), nullable=False),  # human | auto
    sa.Column("decision", sa.String(16), nullable=False),  # accept | reject | undo
    sa.Column("reason", sa.String(64)),
    sa.Column("simple_prompt", sa.Text),  # the edited prompt, when edited (the caption stays in payload)
    sa.Column("previous_id", sa.Integer),  # the decision this one replaces or undoes
    sa.Column("previous_decision", sa.String(16)),
    sa.Column("previous_reason", sa.String(64)),
    sa.Column("previous_prompt", sa.Text),
    sa.Column("created_at", UTC_TS, nullable=False),
    sa.Column("view", sa.String(16)),  # single | grid | api | admin (None: a policy, or before 0008)
    sa.Column("guideline_version", sa.String(64)),  # the guidelines in force when it was made
)
standing = sa.Table(
    "standing",
    meta,
    sa.Column("sample_id", sa.String(32), sa.ForeignKey("items.sample_id"), primary_key=True),
    sa.Column("actor", sa.String(128), primary_key=True),
    sa.Column("actor_kind", sa.String(8), nullable=False),
    sa.Column("decision_id", sa.Integer, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64)),
    sa.Column("simple_prompt", sa.Text),
    sa.Column("created_at", UTC_TS, nullable=False),
    sa.Index("ix_standing_actor", "actor", "decision_id"),
)
stewards = sa.Table(
    "stewards",
    meta,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTC_TS, nullable=False),
    sa.Column("session_key", sa.String(64)),  # new on create, reset, role change and logout
)
login_limits = sa.Table(  # failed logins per key (address, address+name), shared by all workers
    "login_limits",
    meta,
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_start", UTC_TS, nullable=False),
    sa.Column("not_before", UTC_TS, nullable=False),
    sa.Column("last_at", UTC_TS, nullable=False, index=True),
)
tokens = sa.Table(
    "tokens",
    meta,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("steward", sa.String(128), sa.ForeignKey("stewards.name", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", UTC_TS, nullable=False),
)
judgments = sa.Table(
    "judgments",
    meta,
    sa.Column("run", sa.String(200), primary_key=True),
    sa.Column("pair_id", sa.String(64), primary_key=True),
    sa.Column("steward", sa.String(128), primary_key=True),
    sa.Column("choice", sa.String(8), nullable=False),  # adapter | baseline | tie
    sa.Column("created_at", UTC_TS, nullable=False),
)
accuracy_judgments = sa.Table(  # the paper's question, asked of each image of a pair
    "accuracy_judgments",
    meta,
    sa.Column("run", sa.String(200), primary_key=True),
    sa.Column("pair_id", sa.String(64), primary_key=True),
    sa.Column("steward", sa.String(128), primary_key=True),
    sa.Column("adapter_shows", sa.Boolean, nullable=False),  # the adapter's image shows the semantics
    sa.Column("baseline_shows", sa.Boolean, nullable=False),
    sa.Column("created_at", UTC_TS, nullable=False),
)
takedowns = sa.Table(  # append-only: what was taken down, at whose request, entered by whom, when
    "takedowns",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # sample | item | creator | url
    sa.Column("source", sa.String(32)),  # item and creator: the site
    sa.Column("value", sa.Text, nullable=False),  # the sample id, item id, creator name or URL
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("requested_by", sa.Text),
    sa.Column("actor", sa.String(128), nullable=False),  # who entered it (cli:<user> or a steward)
    sa.Column("created_at", UTC_TS, nullable=False),
)
release_prunes = sa.Table(  # append-only: release versions deleted because they held taken-down rows
    "release_prunes",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("release", sa.String(32), nullable=False),
    sa.Column("superseded_by", sa.String(32), nullable=False),
    sa.Column("location", sa.Text, nullable=False),  # the folder or published URL deleted
    sa.Column("taken_down_rows", sa.Integer, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("created_at", UTC_TS, nullable=False),
)
release_approvals = sa.Table(  # append-only: held releases a person let out, and why
    "release_approvals",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("release", sa.String(32), nullable=False),
    sa.Column("held_for", sa.Text, nullable=False),  # the gate's reasons, one a line
    sa.Column("reason", sa.Text, nullable=False),  # the person's
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("created_at", UTC_TS, nullable=False),
)
reveals = sa.Table(  # append-only: each time a steward unblurred a flagged image, or blurred it again
    "reveals",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sample_id", sa.String(32), nullable=False, index=True),
    sa.Column("steward", sa.String(128), nullable=False, index=True),
    sa.Column("action", sa.String(8), nullable=False),  # reveal | hide
    sa.Column("created_at", UTC_TS, nullable=False),
)
comments = sa.Table(  # append-only: a steward's note on an item; a flag asks an admin to look
    "comments",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sample_id", sa.String(32), sa.ForeignKey("items.sample_id"), nullable=False, index=True),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", UTC_TS, nullable=False),
)
admin_actions = sa.Table(  # append-only: the admins' bulk actions, with the selection they applied to
    "admin_actions",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # reopen | reassign | release
    sa.Column("selection", sa.Text, nullable=False),  # the filters, as JSON
    sa.Column("items", sa.Integer, nullable=False),
    sa.Column("created_at", UTC_TS, nullable=False),
)
