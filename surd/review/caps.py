"""The cap on what one steward holds at once (`review.max_held`): what a claim may add, what the
steward holds now, and one claim of a steward at a time."""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa

from surd.review.kinds import State
from surd.review.schema import items


def under_cap(ids: list[str], held: set[str], max_held: int) -> list[str]:
    """The claimed ids, in order, keeping what is held already and new ones while room is left."""
    room = max(0, max_held - len(held))
    kept = []
    for i in ids:
        if i in held:
            kept.append(i)
        elif room > 0:
            kept.append(i)
            room -= 1
    return kept


def holding(conn: sa.Connection, steward: str, now: datetime) -> set[str]:
    """The open items whose lease the steward holds now."""
    return set(
        conn.execute(
            sa.select(items.c.sample_id).where(
                items.c.lease_owner == steward, items.c.lease_expires >= now, items.c.state == State.OPEN
            )
        ).scalars()
    )


def one_claim_at_a_time(conn: sa.Connection, steward: str) -> None:
    """Two claims of one steward at once (two tabs, a script) must not both count the same room
    under the cap: PostgreSQL serialises them on a transaction lock keyed by the name (SQLite's
    write transactions are serial already: BEGIN IMMEDIATE, surd.review.db)."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(b"claim:" + steward.encode()).digest()[:8], "big", signed=True)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
