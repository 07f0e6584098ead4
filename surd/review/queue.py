"""The review queue: items, leases and append-only decisions in one SQL database.

SQLite (WAL) by default, PostgreSQL at scale: the same SQLAlchemy Core code runs on both.
Decisions are never updated or deleted; an undo is a new row. Auto-review policies write
decisions with `actor_kind = 'auto'`, never mixed with human ones.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from storage.tables import fault_point

SCHEMA_VERSION = 1
meta = sa.MetaData()

items = sa.Table(
    "items",
    meta,
    sa.Column("sample_id", sa.String(32), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires", sa.DateTime(timezone=True)),
)
decisions = sa.Table(
    "decisions",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sample_id", sa.String(32), sa.ForeignKey("items.sample_id"), nullable=False, index=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("actor_kind", sa.String(8), nullable=False),  # human | auto
    sa.Column("decision", sa.String(16), nullable=False),  # accept | reject | undo
    sa.Column("reason", sa.String(64)),
    sa.Column("simple_prompt", sa.Text),  # the edited prompt, when edited
    sa.Column("previous_id", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
schema_info = sa.Table("schema_info", meta, sa.Column("version", sa.Integer, nullable=False))


class QueueSchemaError(RuntimeError):
    pass


def connect(url: str) -> sa.Engine:
    """Open (and create or check) the queue database."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    meta.create_all(engine)
    with engine.begin() as conn:
        found = conn.execute(sa.select(schema_info.c.version)).scalar()
        if found is None:
            conn.execute(schema_info.insert().values(version=SCHEMA_VERSION))
        elif found != SCHEMA_VERSION:
            raise QueueSchemaError(f"queue database has schema {found}, code expects {SCHEMA_VERSION}")
    return engine


def _insert_ignore(engine: sa.Engine, table: sa.Table) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def enqueue(engine: sa.Engine, rows: list[dict[str, Any]]) -> int:
    """Add items (sample_id + display payload); enqueuing an item twice does nothing."""
    if not rows:
        return 0
    now = datetime.now(UTC)
    values = [
        {
            "sample_id": r["sample_id"],
            "payload": json.dumps(r, default=str, sort_keys=True),
            "enqueued_at": now,
        }
        for r in rows
    ]
    with engine.begin() as conn:
        result = conn.execute(_insert_ignore(engine, items), values)
    return int(result.rowcount or 0)


def queued_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(items.c.sample_id)).scalars())


def effective(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """The standing decision of each decided item (the latest not undone)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(decisions).order_by(decisions.c.id)).mappings().all()
    standing: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        stack = standing.setdefault(row["sample_id"], [])
        if row["decision"] == "undo":
            stack[:] = [d for d in stack if d["id"] != row["previous_id"]]
        else:
            stack.append(dict(row))
    return {sid: stack[-1] for sid, stack in standing.items() if stack}


def decide(
    engine: sa.Engine,
    sample_id: str,
    actor: str,
    decision: str,
    *,
    actor_kind: str = "human",
    reason: str | None = None,
    simple_prompt: str | None = None,
) -> int:
    if decision not in ("accept", "reject"):
        raise ValueError("decision must be accept or reject")
    if decision == "reject" and not reason:
        raise ValueError("a rejection needs a reason")
    with engine.begin() as conn:
        result = conn.execute(
            decisions.insert().values(
                sample_id=sample_id,
                actor=actor,
                actor_kind=actor_kind,
                decision=decision,
                reason=reason,
                simple_prompt=simple_prompt,
                created_at=datetime.now(UTC),
            )
        )
        conn.execute(
            items.update().where(items.c.sample_id == sample_id).values(lease_owner=None, lease_expires=None)
        )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def claim(engine: sa.Engine, steward: str, n: int, lease_seconds: int) -> list[dict[str, Any]]:
    """Lease up to n undecided items that nobody else holds; an expired lease is free again."""
    now = datetime.now(UTC)
    decided = set(effective(engine))
    got: list[dict[str, Any]] = []
    with engine.begin() as conn:
        free = conn.execute(
            sa.select(items.c.sample_id, items.c.payload)
            .where(
                sa.or_(
                    items.c.lease_owner.is_(None), items.c.lease_expires < now, items.c.lease_owner == steward
                )
            )
            .order_by(items.c.enqueued_at, items.c.sample_id)
        ).all()
        for sid, payload in free:
            if sid in decided:
                continue
            res = conn.execute(
                items.update()
                .where(items.c.sample_id == sid)
                .where(
                    sa.or_(
                        items.c.lease_owner.is_(None),
                        items.c.lease_expires < now,
                        items.c.lease_owner == steward,
                    )
                )
                .values(lease_owner=steward, lease_expires=now + timedelta(seconds=lease_seconds))
            )
            if res.rowcount == 1:
                got.append(json.loads(payload))
            if len(got) == n:
                break
    return got


def auto_review(engine: sa.Engine, policy: str, min_margin: float) -> int:
    """Decide every undecided item by a named policy; recorded as `policy:<name>`, kind auto."""
    if policy == "none":
        return 0
    if policy != "demo-margin-v1":
        raise ValueError(f"unknown auto-review policy {policy!r}; valid: none, demo-margin-v1")
    decided = set(effective(engine))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(items.c.sample_id, items.c.payload)).all()
    n = 0
    for sid, payload in rows:
        if sid in decided:
            continue
        p = json.loads(payload)
        margin = float(p["p_simple"]) - float(p["p_complex"])
        words = len((p.get("simple_prompt") or "").split())
        if words < 3:
            decide(engine, sid, f"policy:{policy}", "reject", actor_kind="auto", reason="caption_wrong")
        elif margin < min_margin:
            decide(engine, sid, f"policy:{policy}", "reject", actor_kind="auto", reason="low_margin")
        else:
            decide(engine, sid, f"policy:{policy}", "accept", actor_kind="auto")
        n += 1
        fault_point("review", n)
    return n
