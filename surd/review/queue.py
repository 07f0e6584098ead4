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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from storage.tables import fault_point
from surd.review.db import QueueSchemaError, connect, reader
from surd.review.schema import decisions, items, standing
from surd.review.text import clean_prompt

__all__ = ["QueueSchemaError", "connect"]


class QueueError(RuntimeError):
    """A request the queue refuses (the item is held by another steward, already decided, ...)."""


@dataclass(frozen=True)
class Filters:
    """What a steward wants to see; None means any."""

    source: str | None = None
    margin_min: float | None = None
    margin_max: float | None = None
    nsfw_levels: tuple[str, ...] | None = None

    def clauses(self) -> list[Any]:
        out: list[Any] = []
        if self.source:
            out.append(items.c.source == self.source)
        if self.margin_min is not None:
            out.append(items.c.margin >= self.margin_min)
        if self.margin_max is not None:
            out.append(items.c.margin <= self.margin_max)
        if self.nsfw_levels:
            out.append(items.c.nsfw_level.in_(self.nsfw_levels))
        return out


def is_audit(sample_id: str, share: float) -> bool:
    """A stable draw: the same items are audit items on every machine and every re-enqueue."""
    h = int.from_bytes(hashlib.sha256(b"audit:" + sample_id.encode()).digest()[:8], "big")
    return h / 2**64 < share


def enqueue(engine: sa.Engine, rows: list[dict[str, Any]], audit_share: float = 0.0) -> int:
    """Add items (sample_id + display payload); enqueuing an item twice does nothing."""
    if not rows:
        return 0
    now = datetime.now(UTC)
    values = []
    for r in rows:
        margin = float(r["p_simple"]) - float(r["p_complex"]) if r.get("p_simple") is not None else None
        values.append(
            {
                "sample_id": r["sample_id"],
                "payload": json.dumps(r, default=str, sort_keys=True),
                "enqueued_at": now,
                "source": r.get("source"),
                "margin": margin,
                "nsfw_level": None if r.get("nsfw_level") is None else str(r["nsfw_level"]),
                "needed": 2 if is_audit(r["sample_id"], audit_share) else 1,
                "state": "open",
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


def queued_ids(engine: sa.Engine) -> set[str]:
    with reader(engine) as conn:
        return set(conn.execute(sa.select(items.c.sample_id)).scalars())


def effective(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """The outcome of every final item: decision, reason, edited prompt, actor(s), actor kind."""
    with reader(engine) as conn:
        rows = conn.execute(
            sa.select(
                items.c.sample_id,
                items.c.final_decision,
                items.c.final_reason,
                items.c.final_prompt,
                items.c.final_actor,
                items.c.final_actor_kind,
                items.c.final_decision_id,
            ).where(items.c.state == "final")
        ).all()
    return {
        r[0]: {
            "decision": r[1],
            "reason": r[2],
            "simple_prompt": r[3],
            "actor": r[4],
            "actor_kind": r[5],
            "id": r[6],
        }
        for r in rows
    }


def _outcome(needed: int, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The item's outcome from its standing decisions, or None while it stays open."""
    autos = [r for r in rows if r["actor_kind"] == "auto"]
    humans = sorted((r for r in rows if r["actor_kind"] == "human"), key=lambda r: r["decision_id"])
    if humans:
        # a steward overriding a policy's decision settles it alone; audit overlap is for stewards
        if len(humans) < (1 if autos else needed):
            return None
        votes = Counter(r["decision"] for r in humans)
        top, n = votes.most_common(1)[0]
        if 2 * n <= len(humans):
            return None  # a split: one more steward breaks it
        agreeing = [r for r in humans if r["decision"] == top]
        reasons = Counter(r["reason"] for r in agreeing if r["reason"])
        edited = [r["simple_prompt"] for r in agreeing if r["simple_prompt"]]
        return {
            "final_decision": top,
            "final_reason": reasons.most_common(1)[0][0] if reasons else None,
            "final_prompt": edited[-1] if edited else None,
            "final_actor": ",".join(sorted(r["actor"] for r in humans)),
            "final_actor_kind": "human",
            "final_decision_id": max(r["decision_id"] for r in agreeing),
        }
    if autos:
        a = autos[-1]
        return {
            "final_decision": a["decision"],
            "final_reason": a["reason"],
            "final_prompt": a["simple_prompt"],
            "final_actor": a["actor"],
            "final_actor_kind": "auto",
            "final_decision_id": a["decision_id"],
        }
    return None


def _refresh(conn: sa.Connection, sample_id: str, needed: int) -> bool:
    rows = [
        dict(r) for r in conn.execute(sa.select(standing).where(standing.c.sample_id == sample_id)).mappings()
    ]
    out = _outcome(needed, rows)
    if out is None:
        values: dict[str, Any] = dict.fromkeys(
            (
                "final_decision",
                "final_reason",
                "final_prompt",
                "final_actor",
                "final_actor_kind",
                "final_at",
                "final_decision_id",
            )
        )
        values["state"] = "open"
    else:
        values = {**out, "state": "final", "final_at": datetime.now(UTC)}
    conn.execute(items.update().where(items.c.sample_id == sample_id).values(**values))
    return out is not None


def rebuild_derived(conn: sa.Connection) -> None:
    """Recompute `standing` and every item's outcome from the decision log (used by migrations)."""
    conn.execute(standing.delete())
    log = conn.execute(sa.select(decisions).order_by(decisions.c.id)).mappings().all()
    current: dict[tuple[str, str], dict[str, Any]] = {}
    for d in log:
        key = (d["sample_id"], d["actor"])
        if d["decision"] == "undo":
            if key in current and current[key]["decision_id"] == d["previous_id"]:
                del current[key]
        else:
            current[key] = {
                "sample_id": d["sample_id"],
                "actor": d["actor"],
                "actor_kind": d["actor_kind"],
                "decision_id": d["id"],
                "decision": d["decision"],
                "reason": d["reason"],
                "simple_prompt": d["simple_prompt"],
                "created_at": d["created_at"],
            }
    if current:
        conn.execute(standing.insert(), list(current.values()))
    for sid, needed in conn.execute(sa.select(items.c.sample_id, items.c.needed)).all():
        _refresh(conn, sid, needed)


def claim(
    engine: sa.Engine, steward: str, n: int, lease_seconds: int, filters: Filters | None = None
) -> list[dict[str, Any]]:
    """Lease up to n open items that nobody else holds and this steward has not decided.

    Items the steward already holds come first (a reload shows the same item); an expired lease
    is free again. Returns the items' payloads, in queue order.
    """
    now = datetime.now(UTC)
    mine = standing.alias("mine")
    free = sa.or_(items.c.lease_owner.is_(None), items.c.lease_expires < now, items.c.lease_owner == steward)
    not_decided_by_me = ~sa.exists(
        sa.select(mine.c.sample_id).where(mine.c.sample_id == items.c.sample_id, mine.c.actor == steward)
    )
    held_first = sa.case((items.c.lease_owner == steward, 0), else_=1)
    query = (
        sa.select(items.c.sample_id)
        .where(items.c.state == "open", free, not_decided_by_me, *(filters or Filters()).clauses())
        .order_by(held_first, items.c.enqueued_at, items.c.sample_id)
        .limit(n)
    )
    if engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=items)
    with engine.begin() as conn:
        ids = list(conn.execute(query).scalars())
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
    actor_kind: str = "human",
    reason: str | None = None,
    simple_prompt: str | None = None,
) -> int:
    """Record a decision (or a change of this actor's earlier one); returns the log row's id.

    Refused when another steward holds a live lease on the item, or when stewards decided the item
    and this actor had no part in it. A steward may override a policy's (auto) decision.
    """
    if decision not in ("accept", "reject"):
        raise ValueError("decision must be accept or reject")
    if decision == "reject" and not reason:
        raise ValueError("a rejection needs a reason")
    simple_prompt = None if decision == "reject" else clean_prompt(simple_prompt)  # ValueError: why
    now = datetime.now(UTC)
    with engine.begin() as conn:
        item_q = sa.select(
            items.c.state,
            items.c.needed,
            items.c.lease_owner,
            items.c.lease_expires,
            items.c.final_actor_kind,
        ).where(items.c.sample_id == sample_id)
        if engine.dialect.name == "postgresql":
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
            conn.execute(
                sa.select(standing).where(standing.c.sample_id == sample_id, standing.c.actor == actor)
            )
            .mappings()
            .first()
        )
        if state == "final" and final_kind == "human" and prev is None and actor_kind == "human":
            raise QueueError(f"item {sample_id} is already decided by stewards")
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
        if prev is None:
            conn.execute(standing.insert().values(sample_id=sample_id, actor=actor, **row))
        else:
            conn.execute(
                standing.update()
                .where(standing.c.sample_id == sample_id, standing.c.actor == actor)
                .values(**row)
            )
        conn.execute(
            items.update()
            .where(items.c.sample_id == sample_id, items.c.lease_owner == actor)
            .values(lease_owner=None, lease_expires=None)
        )
        _refresh(conn, sample_id, needed)
    return did


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
        _refresh(conn, sid, needed)
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


def item(engine: sa.Engine, sample_id: str, actor: str | None = None) -> dict[str, Any] | None:
    """One item's payload, lease and outcome, with `actor`'s own standing decision if any."""
    with reader(engine) as conn:
        row = conn.execute(sa.select(items).where(items.c.sample_id == sample_id)).mappings().first()
        if row is None:
            return None
        out = {**json.loads(row["payload"]), **{k: row[k] for k in ("state", "needed", "lease_owner")}}
        out["final"] = {k: row[k] for k in row.keys() if k.startswith("final_")}  # noqa: SIM118
        if actor is not None:
            mine = (
                conn.execute(
                    sa.select(standing).where(standing.c.sample_id == sample_id, standing.c.actor == actor)
                )
                .mappings()
                .first()
            )
            out["mine"] = dict(mine) if mine else None
    return out


def last_decided(engine: sa.Engine, actor: str, before_id: int | None = None) -> str | None:
    """The item of this steward's latest standing decision (older than before_id, if given)."""
    q = sa.select(standing.c.sample_id).where(standing.c.actor == actor)
    if before_id is not None:
        q = q.where(standing.c.decision_id < before_id)
    with reader(engine) as conn:
        return conn.execute(q.order_by(standing.c.decision_id.desc()).limit(1)).scalar()


def progress(engine: sa.Engine, now: datetime | None = None) -> dict[str, Any]:
    """Queue totals and, per steward, decisions made, standing, in the last hour, and pace."""
    now = now or datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    with reader(engine) as conn:
        by_state: dict[str, int] = dict(
            conn.execute(sa.select(items.c.state, sa.func.count()).group_by(items.c.state)).all()  # type: ignore[arg-type]
        )
        outcomes: dict[str, int] = dict(
            conn.execute(
                sa.select(items.c.final_decision, sa.func.count())
                .where(items.c.state == "final")
                .group_by(items.c.final_decision)
            ).all()  # type: ignore[arg-type]
        )
        leased = conn.execute(
            sa.select(sa.func.count()).where(items.c.lease_owner.is_not(None), items.c.lease_expires >= now)
        ).scalar_one()
        per = conn.execute(
            sa.select(
                standing.c.actor,
                sa.func.count(),
                sa.func.sum(sa.case((standing.c.created_at >= hour_ago, 1), else_=0)),
                sa.func.min(standing.c.created_at),
                sa.func.max(standing.c.created_at),
            )
            .where(standing.c.actor_kind == "human")
            .group_by(standing.c.actor)
        ).all()
    stewards = {}
    for actor, total, last_hour, first, last in per:
        span = (_aware(last) - _aware(first)).total_seconds()
        stewards[actor] = {
            "decided": int(total),
            "last_hour": int(last_hour or 0),
            "seconds_per_item": round(span / (total - 1), 1) if total > 1 else None,
        }
    total_items = sum(by_state.values())
    return {
        "items": int(total_items),
        "final": int(by_state.get("final", 0)),
        "remaining": int(by_state.get("open", 0)),
        "accepted": int(outcomes.get("accept", 0)),
        "rejected": int(outcomes.get("reject", 0)),
        "leased": int(leased),
        "team_decisions": sum(s["decided"] for s in stewards.values()),
        "stewards": stewards,
    }


def progress_markdown(q: dict[str, Any]) -> str:
    """`progress()` plus `agreement()` (under key "agreement") as markdown tables."""
    ag = q["agreement"]
    lines = [
        "| items | final | accepted | rejected | open | leased now | audit pairs | agreement | Cohen's κ |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {q['items']} | {q['final']} | {q['accepted']} | {q['rejected']} | {q['remaining']} "
        f"| {q['leased']} | {ag['audit_items_compared']} | {ag['agreement']} | {ag['cohen_kappa']} |",
        "",
        "| steward | decided | last hour | s/item |",
        "|---|---|---|---|",
        *(
            f"| {name} | {p['decided']} | {p['last_hour']} | {p['seconds_per_item']} |"
            for name, p in sorted(q["stewards"].items())
        ),
    ]
    return "\n".join(lines)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def open_leases(engine: sa.Engine) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    with reader(engine) as conn:
        rows = conn.execute(
            sa.select(items.c.lease_owner, sa.func.count(), sa.func.max(items.c.lease_expires))
            .where(items.c.lease_owner.is_not(None), items.c.lease_expires >= now)
            .group_by(items.c.lease_owner)
            .order_by(items.c.lease_owner)
        ).all()
    return [{"steward": o, "items": int(n), "expires": _aware(e).isoformat()} for o, n, e in rows]


def agreement(engine: sa.Engine) -> dict[str, Any]:
    """Agreement of the first two human decisions on each audit item: share and Cohen's kappa."""
    with reader(engine) as conn:
        rows = conn.execute(
            sa.select(standing.c.sample_id, standing.c.decision, standing.c.actor)
            .join(items, items.c.sample_id == standing.c.sample_id)
            .where(items.c.needed >= 2, standing.c.actor_kind == "human")
            .order_by(standing.c.sample_id, standing.c.decision_id)
        ).all()
    pairs: dict[str, list[str]] = {}
    for sid, decision, _ in rows:
        pairs.setdefault(sid, []).append(decision)
    both = [(v[0], v[1]) for v in pairs.values() if len(v) >= 2]
    if not both:
        return {"audit_items_compared": 0, "agreement": None, "cohen_kappa": None}
    agree = sum(a == b for a, b in both) / len(both)
    pa = sum(a == "accept" for a, _ in both) / len(both)
    pb = sum(b == "accept" for _, b in both) / len(both)
    expected = pa * pb + (1 - pa) * (1 - pb)
    kappa = 1.0 if expected == 1 else (agree - expected) / (1 - expected)
    return {"audit_items_compared": len(both), "agreement": round(agree, 4), "cohen_kappa": round(kappa, 4)}


EXPORT_COLUMNS = (
    "sample_id",
    "state",
    "decision",
    "reason",
    "simple_prompt",
    "caption",
    "actor",
    "actor_kind",
    "decided_at",
    "source",
    "margin",
)


def export_rows(engine: sa.Engine, what: str = "outcomes", chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Stream every item's outcome (`outcomes`) or the whole decision log (`audit`), in id order."""
    if what not in ("outcomes", "audit"):
        raise ValueError("export what: outcomes or audit")
    with reader(engine) as conn:
        if what == "audit":
            result = conn.execution_options(yield_per=chunk).execute(
                sa.select(decisions).order_by(decisions.c.id)
            )
            for r in result.mappings():
                d = dict(r)
                d["created_at"] = _aware(d["created_at"]).isoformat()
                yield d
            return
        result = conn.execution_options(yield_per=chunk).execute(
            sa.select(
                items.c.sample_id,
                items.c.state,
                items.c.final_decision,
                items.c.final_reason,
                items.c.final_prompt,
                items.c.payload,
                items.c.final_actor,
                items.c.final_actor_kind,
                items.c.final_at,
                items.c.source,
                items.c.margin,
            ).order_by(items.c.sample_id)
        )
        for sid, state, dec, reason, prompt, payload, actor, kind, at, source, margin in result:
            caption = json.loads(payload).get("simple_prompt")
            yield {
                "sample_id": sid,
                "state": state,
                "decision": dec,
                "reason": reason,
                "simple_prompt": prompt or (caption if dec == "accept" else None),
                "caption": caption,
                "actor": actor,
                "actor_kind": kind,
                "decided_at": _aware(at).isoformat() if at else None,
                "source": source,
                "margin": margin,
            }


def auto_review(engine: sa.Engine, policy: str, min_margin: float) -> int:
    """Decide every open item no human has touched by a named policy (`policy:<name>`, kind auto).

    demo-margin-v1: reject captions under 3 words, reject a CLIP margin under `min_margin`,
    accept a margin of at least `min_margin + 0.2`, and leave the band between to stewards.
    """
    if policy == "none":
        return 0
    if policy != "demo-margin-v1":
        raise ValueError(f"unknown auto-review policy {policy!r}; valid: none, demo-margin-v1")
    with reader(engine) as conn:
        rows = conn.execute(
            sa.select(items.c.sample_id, items.c.payload, items.c.margin).where(
                items.c.state == "open",
                ~sa.exists(sa.select(standing.c.sample_id).where(standing.c.sample_id == items.c.sample_id)),
            )
        ).all()
    n = 0
    actor = f"policy:{policy}"
    for sid, payload, margin in rows:
        p = json.loads(payload)
        words = len((p.get("simple_prompt") or "").split())
        if words < 3:
            decide(engine, sid, actor, "reject", actor_kind="auto", reason="caption_wrong")
        elif margin is None or margin < min_margin:
            decide(engine, sid, actor, "reject", actor_kind="auto", reason="low_margin")
        elif margin >= min_margin + 0.2:
            decide(engine, sid, actor, "accept", actor_kind="auto")
        else:
            continue
        n += 1
        fault_point("review", n)
    return n
