"""The review queue: items, exclusive leases, append-only decisions, audit overlap, agreement.

SQLite (WAL) by default, PostgreSQL at scale: the same SQLAlchemy Core code runs on both.
Decisions are never updated or deleted; a change of mind or an undo is a new row that names the
row it replaces and its value. An item is `final` when it has the decisions it needs (one, or two
independent ones for an audit item) and a strict majority of them agree; a 1–1 split stays open
for a third steward. Auto-review policies write decisions with `actor_kind = 'auto'`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from surd.parallel import batched
from surd.review.caps import holding, one_claim_at_a_time, under_cap
from surd.review.db import QueueSchemaError, connect
from surd.review.filters import Filters
from surd.review.kinds import ActorKind, Decision, State
from surd.review.outcome import refresh
from surd.review.schema import decisions, items, standing
from surd.review.text import clean_prompt
from surd.sources.safety import source_level

__all__ = ["Filters", "QueueSchemaError", "connect"]


class QueueError(RuntimeError):
    """A request the queue refuses (the item is held by another steward, already decided, ...)."""


def is_audit(sample_id: str, share: float) -> bool:
    """A stable draw: the same items are audit items on every machine and every re-enqueue."""
    h = int.from_bytes(hashlib.sha256(b"audit:" + sample_id.encode()).digest()[:8], "big")
    return h / 2**64 < share


def searchable(payload: dict[str, Any]) -> str:
    """What a text search reads of an item: its two prompts, lower-cased."""
    return "\n".join(str(payload.get(k) or "") for k in ("simple_prompt", "complex_prompt")).lower()


def enqueue(engine: sa.Engine, rows: list[dict[str, Any]], audit_share: float = 0.0) -> int:
    """Add items (sample_id + display payload); enqueuing an item twice does nothing."""
    if not rows:
        return 0
    now = datetime.now(UTC)
    values = []
    for r in rows:
        margin = float(r["p_simple"]) - float(r["p_complex"]) if r.get("p_simple") is not None else None
        r = {**r, "safety_level": source_level(r.get("nsfw_level"))}
        values.append(
            {
                "sample_id": r["sample_id"],
                "payload": json.dumps(r, default=str, sort_keys=True),
                "enqueued_at": now,
                "source": r.get("source"),
                "margin": margin,
                "nsfw_level": None if r.get("nsfw_level") is None else str(r["nsfw_level"]),
                "safety_level": r["safety_level"],
                "nsfw_detector": r.get("nsfw_detector"),  # the trained detector's (surd.stages.nsfw)
                "prompts": searchable(r),
                "needed": 2 if is_audit(r["sample_id"], audit_share) else 1,
                "state": State.OPEN,
            }
        )
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(items).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(items).on_conflict_do_nothing()
    with engine.begin() as conn:
        added = conn.execute(stmt.returning(items.c.sample_id), values).all()
    return len(added)


def claim(
    engine: sa.Engine,
    steward: str,
    n: int,
    lease_seconds: int,
    filters: Filters | None = None,
    max_held: int | None = None,
) -> list[dict[str, Any]]:
    """Lease up to n open items that nobody else holds and this steward has not decided.

    Items the steward already holds come first (a reload shows the same item); an expired lease
    is free again. With `max_held`, the steward never holds more, across claims and filters (a
    claim past it gets what is left under it). Returns the items' payloads, in queue order.
    """
    now = datetime.now(UTC)
    mine = standing.alias("mine")
    free = sa.or_(items.c.lease_owner.is_(None), items.c.lease_expires < now, items.c.lease_owner == steward)
    not_decided_by_me = ~sa.exists(
        sa.select(mine.c.sample_id).where(mine.c.sample_id == items.c.sample_id, mine.c.actor == steward)
    )
    held_first = sa.case((items.c.lease_owner == steward, 0), else_=1)
    f = filters or Filters()
    query = (
        sa.select(items.c.sample_id)
        .where(items.c.state == State.OPEN, free, not_decided_by_me, *f.clauses())
        .order_by(held_first, *f.order(), items.c.enqueued_at, items.c.sample_id)
        .limit(n)
    )
    if f.single_only:  # the grid: what this steward holds beyond its filters waits for the single view
        query = query.where(
            sa.or_(items.c.lease_owner != steward, items.c.lease_owner.is_(None), items.c.needed == 1)
        )
    if engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=items)
    with engine.begin() as conn:
        if max_held is not None:
            one_claim_at_a_time(conn, steward)
            held = holding(conn, steward, now)
        ids = list(conn.execute(query).scalars())
        if max_held is not None:
            ids = under_cap(ids, held, max_held)
        if not ids:
            return []
        conn.execute(
            items.update()
            .where(items.c.sample_id.in_(ids), free)
            .values(lease_owner=steward, lease_expires=now + timedelta(seconds=lease_seconds))
        )
        got = conn.execute(
            sa.select(items.c.sample_id, items.c.payload, items.c.lease_expires).where(
                items.c.sample_id.in_(ids), items.c.lease_owner == steward
            )
        ).all()
    order = {sid: i for i, sid in enumerate(ids)}
    return [json.loads(p) for _, p, _ in sorted(got, key=lambda r: order[r[0]])]


def skip(engine: sa.Engine, steward: str, sample_id: str) -> bool:
    """A steward passes on an item: their lease on it ends at once, so another steward may claim
    it (their own claims leave it out while they skip it). True when they held it."""
    with engine.begin() as conn:
        done = conn.execute(
            items.update()
            .where(items.c.sample_id == sample_id, items.c.lease_owner == steward)
            .values(lease_owner=None, lease_expires=None)
        ).rowcount
    return bool(done)


def release_leases(engine: sa.Engine, steward: str | None = None, sample_id: str | None = None) -> int:
    """Return leased items to the queue (a steward's, one item, or all)."""
    q = items.update().where(items.c.lease_owner.is_not(None))
    if steward is not None:
        q = q.where(items.c.lease_owner == steward)
    if sample_id is not None:
        q = q.where(items.c.sample_id == sample_id)
    with engine.begin() as conn:
        return int(conn.execute(q.values(lease_owner=None, lease_expires=None)).rowcount or 0)


def decide(
    engine: sa.Engine,
    sample_id: str,
    actor: str,
    decision: str,
    *,
    actor_kind: str = ActorKind.HUMAN,
    reason: str | None = None,
    simple_prompt: str | None = None,
    view: str | None = None,
    guideline_version: str | None = None,
) -> int:
    """Record a decision (or a change of this actor's earlier one); returns the log row's id.
    `view` (single, grid, api) and `guideline_version` are recorded with it.

    Refused when another steward holds a live lease on the item, or when stewards decided the item
    and this actor had no part in it. A steward may override a policy's (auto) decision.
    """
    with engine.begin() as conn:
        return _decide(
            conn,
            engine.dialect.name,
            sample_id,
            actor,
            decision,
            actor_kind,
            reason,
            simple_prompt,
            {"view": view, "guideline_version": guideline_version},
        )


def decide_many(
    engine: sa.Engine,
    decisions: Iterable[dict[str, Any]],
    per_transaction: int = 256,
    each: Callable[[int], None] | None = None,
) -> int:
    """Record many decisions (`decide`'s arguments as dicts), `per_transaction` to a transaction:
    a policy's hundreds of thousands of decisions are not as many synced commits. `each(n)` is
    told after the n-th (in its transaction). Returns how many were recorded."""
    n = 0
    for batch in batched(decisions, per_transaction):
        with engine.begin() as conn:
            for d in batch:
                _decide(
                    conn,
                    engine.dialect.name,
                    d["sample_id"],
                    d["actor"],
                    d["decision"],
                    d.get("actor_kind", ActorKind.HUMAN),
                    d.get("reason"),
                    d.get("simple_prompt"),
                    {"view": d.get("view"), "guideline_version": d.get("guideline_version")},
                )
                n += 1
                if each:
                    each(n)
    return n


def decide_page(engine: sa.Engine, steward: str, page: list[dict[str, Any]]) -> int:
    """A grid page's decisions (`decide_many`'s dicts) in one transaction, each its own log row:
    every item must be one this steward holds and not an audit item (those are decided one at a
    time); QueueError, and nothing recorded, otherwise."""
    ids = [d["sample_id"] for d in page]
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(items.c.sample_id, items.c.lease_owner, items.c.needed).where(
                items.c.sample_id.in_(ids)
            )
        ).all()
        held = {sid for sid, owner, needed in rows if owner == steward and needed == 1}
        missing = [sid for sid in ids if sid not in held]
        if missing:
            raise QueueError(
                f"{len(missing)} item(s) of the page are not yours to decide in bulk ({missing[0]}, …)"
            )
        for d in page:
            _decide(
                conn,
                engine.dialect.name,
                d["sample_id"],
                steward,
                d["decision"],
                ActorKind.HUMAN,
                d.get("reason"),
                None,
                {"view": d.get("view"), "guideline_version": d.get("guideline_version")},
            )
    return len(page)


def _decide(
    conn: sa.Connection,
    dialect: str,
    sample_id: str,
    actor: str,
    decision: str,
    actor_kind: str,
    reason: str | None,
    simple_prompt: str | None,
    context: dict[str, Any] | None = None,
) -> int:
    if decision not in (Decision.ACCEPT, Decision.REJECT):
        raise ValueError("decision must be accept or reject")
    if decision == Decision.REJECT and not reason:
        raise ValueError("a rejection needs a reason")
    simple_prompt = None if decision == Decision.REJECT else clean_prompt(simple_prompt)  # ValueError: why
    now = datetime.now(UTC)
    needed, prev = _may_decide(conn, dialect, sample_id, actor, actor_kind, now)
    result = conn.execute(
        decisions.insert().values(
            sample_id=sample_id,
            actor=actor,
            actor_kind=actor_kind,
            decision=decision,
            reason=reason,
            simple_prompt=simple_prompt,
            previous_id=prev["decision_id"] if prev else None,
            previous_decision=prev["decision"] if prev else None,
            previous_reason=prev["reason"] if prev else None,
            previous_prompt=prev["simple_prompt"] if prev else None,
            created_at=now,
            **(context or {}),
        )
    )
    did = int(result.inserted_primary_key[0])  # type: ignore[index]
    row = {
        "actor_kind": actor_kind,
        "decision_id": did,
        "decision": decision,
        "reason": reason,
        "simple_prompt": simple_prompt,
        "created_at": now,
    }
    _stand(conn, sample_id, actor, row, replaces=prev is not None)
    refresh(conn, sample_id, needed)
    return did


def _may_decide(
    conn: sa.Connection, dialect: str, sample_id: str, actor: str, actor_kind: str, now: datetime
) -> tuple[int, Any]:
    """The item's needed decisions and this actor's standing one (or None), the item locked on
    PostgreSQL; raises `QueueError` when this actor may not decide it now."""
    item_q = sa.select(
        items.c.state,
        items.c.needed,
        items.c.lease_owner,
        items.c.lease_expires,
        items.c.final_actor_kind,
    ).where(items.c.sample_id == sample_id)
    if dialect == "postgresql":
        item_q = item_q.with_for_update()
    item = conn.execute(item_q).first()
    if item is None:
        raise QueueError(f"no item {sample_id!r} in the queue")
    state, needed, owner, expires, final_kind = item
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if owner not in (None, actor) and expires is not None and expires > now:
        raise QueueError(f"item {sample_id} is held by another steward")
    prev = (
        conn.execute(sa.select(standing).where(standing.c.sample_id == sample_id, standing.c.actor == actor))
        .mappings()
        .first()
    )
    human = ActorKind.HUMAN
    if state == State.FINAL and final_kind == human and prev is None and actor_kind == human:
        raise QueueError(f"item {sample_id} is already decided by stewards")
    return int(needed), prev


def _stand(conn: sa.Connection, sample_id: str, actor: str, row: dict[str, Any], replaces: bool) -> None:
    """This actor's decision becomes their standing one, and the item's lease (if theirs) ends."""
    if replaces:
        conn.execute(
            standing.update()
            .where(standing.c.sample_id == sample_id, standing.c.actor == actor)
            .values(**row)
        )
    else:
        conn.execute(standing.insert().values(sample_id=sample_id, actor=actor, **row))
    conn.execute(
        items.update()
        .where(items.c.sample_id == sample_id, items.c.lease_owner == actor)
        .values(lease_owner=None, lease_expires=None)
    )


def undo(engine: sa.Engine, actor: str, lease_seconds: int = 900) -> str | None:
    """Undo this steward's latest standing decision; the item comes back to them. Returns its id."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        last = (
            conn.execute(
                sa.select(standing)
                .where(standing.c.actor == actor)
                .order_by(standing.c.decision_id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if last is None:
            return None
        sid = last["sample_id"]
        conn.execute(
            decisions.insert().values(
                sample_id=sid,
                actor=actor,
                actor_kind=last["actor_kind"],
                decision="undo",
                previous_id=last["decision_id"],
                previous_decision=last["decision"],
                previous_reason=last["reason"],
                previous_prompt=last["simple_prompt"],
                created_at=now,
            )
        )
        conn.execute(standing.delete().where(standing.c.sample_id == sid, standing.c.actor == actor))
        needed = conn.execute(sa.select(items.c.needed).where(items.c.sample_id == sid)).scalar_one()
        refresh(conn, sid, needed)
        conn.execute(
            items.update()
            .where(
                items.c.sample_id == sid,
                sa.or_(
                    items.c.lease_owner.is_(None), items.c.lease_expires < now, items.c.lease_owner == actor
                ),
            )
            .values(lease_owner=actor, lease_expires=now + timedelta(seconds=lease_seconds))
        )
    return str(sid)
