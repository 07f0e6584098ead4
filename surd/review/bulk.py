"""The admins' bulk actions on a filtered set of items, each recorded in `admin_actions` with its
selection: release the leases (stuck ones, a steward's), reassign the leases to another steward,
reopen final items (their decisions stay in the log; a `reopen` row there says when and by whom
they were set aside, so the items are open again for stewards)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from surd.review.filters import Filters
from surd.review.kinds import State
from surd.review.outcome import OVERRIDING, refresh
from surd.review.schema import admin_actions, decisions, items, standing

ACTIONS = ("release", "reassign", "reopen")
REOPEN = "reopen"  # a decision-log row that sets an item's standing decisions aside


def apply(
    engine: sa.Engine,
    actor: str,
    action: str,
    filters: Filters,
    held_by: str | None = None,
    to: str | None = None,
    lease_seconds: int = 900,
) -> int:
    """Carry out `action` on the items `filters` select (and `held_by` holds, for the lease
    actions); returns how many items it changed. One transaction, logged."""
    if action not in ACTIONS:
        raise ValueError(f"action: one of {', '.join(ACTIONS)}")
    if action == "reassign" and not to:
        raise ValueError("reassign needs the steward to give the items to")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        where = list(filters.clauses())
        if action == "reopen":
            where += [items.c.state == State.FINAL, *(~items.c.final_actor.startswith(a) for a in OVERRIDING)]
        else:
            where += [items.c.lease_owner.is_not(None)]
            if held_by:
                where.append(items.c.lease_owner == held_by)
        ids = list(conn.execute(sa.select(items.c.sample_id).where(*where)).scalars())
        if ids and action == "release":
            _chunks(conn, ids, lambda c: items.update().where(c).values(lease_owner=None, lease_expires=None))
        elif ids and action == "reassign":
            until = now + timedelta(seconds=lease_seconds)
            _chunks(conn, ids, lambda c: items.update().where(c).values(lease_owner=to, lease_expires=until))
        elif ids:
            for sid in ids:
                _reopen(conn, sid, actor, now)
        selection = {k: v for k, v in asdict(filters).items() if v not in (None, (), False, "queue")}
        selection |= {k: v for k, v in (("held_by", held_by), ("to", to)) if v}
        conn.execute(
            admin_actions.insert().values(
                actor=actor, action=action, selection=json.dumps(selection), items=len(ids), created_at=now
            )
        )
    return len(ids)


def _chunks(conn: sa.Connection, ids: list[str], statement: Any) -> None:
    for k in range(0, len(ids), 500):
        conn.execute(statement(items.c.sample_id.in_(ids[k : k + 500])))


def _reopen(conn: sa.Connection, sid: str, actor: str, now: datetime) -> None:
    conn.execute(
        decisions.insert().values(
            sample_id=sid, actor=actor, actor_kind="admin", decision=REOPEN, created_at=now
        )
    )
    conn.execute(standing.delete().where(standing.c.sample_id == sid))
    needed = conn.execute(sa.select(items.c.needed).where(items.c.sample_id == sid)).scalar_one()
    refresh(conn, sid, needed)


def log(engine: sa.Engine, n: int = 50) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        q = sa.select(admin_actions).order_by(admin_actions.c.id.desc()).limit(n)
        return [dict(r) for r in conn.execute(q).mappings()]
