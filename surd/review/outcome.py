"""An item's outcome from its standing decisions: final when it has the decisions it needs (one, or
two independent ones for an audit item) and a strict majority agrees; a 1–1 split stays open for a
third steward. `effective` reads every final outcome; `refresh` recomputes one item's."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from surd.review.db import reader
from surd.review.kinds import ActorKind, Decision, State
from surd.review.schema import decisions, items, standing


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
            ).where(items.c.state == State.FINAL)
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


ACCEPTED = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("decision_id", pa.int64()),  # the decision behind it
        pa.field("decided_by_kind", pa.string()),
        pa.field("edited", pa.string()),  # the steward's edit of the simple prompt, if any
    ]
)
_BATCH = 4096
TAKEDOWN_ACTOR = "takedown:"  # + the takedown's id: the actor of a takedown's rejection
WITHDRAWN_ACTOR = "stage:"  # + a table: a pipeline stage dropped the item after it was queued
OVERRIDING = (TAKEDOWN_ACTOR, WITHDRAWN_ACTOR)  # actors whose rejection settles an item over all


def accepted(engine: sa.Engine) -> pa.Table:
    """Every item finally accepted (schema ACCEPTED), read from a streamed cursor into Arrow
    columns _BATCH rows at a time: a release holds no Python object per accepted sample."""
    query = sa.select(
        items.c.sample_id, items.c.final_decision_id, items.c.final_actor_kind, items.c.final_prompt
    ).where(items.c.state == State.FINAL, items.c.final_decision == Decision.ACCEPT)
    batches = []
    with reader(engine) as conn:
        result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(query)
        for chunk in result.partitions(_BATCH):
            columns = zip(*chunk, strict=True)
            arrays = [pa.array(c, f.type) for c, f in zip(columns, ACCEPTED, strict=True)]
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=ACCEPTED))
    return pa.Table.from_batches(batches, ACCEPTED)


def outcome_of(needed: int, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The item's outcome from its standing decisions, or None while it stays open."""
    taken = [r for r in rows if str(r.get("actor") or "").startswith(TAKEDOWN_ACTOR)]
    taken = taken or [r for r in rows if str(r.get("actor") or "").startswith(WITHDRAWN_ACTOR)]
    if taken:  # a takedown (else a stage's withdrawal) settles an item over every steward and policy
        t = max(taken, key=lambda r: r["decision_id"])
        return {
            "final_decision": t["decision"],
            "final_reason": t["reason"],
            "final_prompt": None,
            "final_actor": t["actor"],
            "final_actor_kind": ActorKind.AUTO,
            "final_decision_id": t["decision_id"],
        }
    autos = [r for r in rows if r["actor_kind"] == ActorKind.AUTO]
    humans = sorted((r for r in rows if r["actor_kind"] == ActorKind.HUMAN), key=lambda r: r["decision_id"])
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
            "final_actor_kind": ActorKind.HUMAN,
            "final_decision_id": max(r["decision_id"] for r in agreeing),
        }
    if autos:
        a = autos[-1]
        return {
            "final_decision": a["decision"],
            "final_reason": a["reason"],
            "final_prompt": a["simple_prompt"],
            "final_actor": a["actor"],
            "final_actor_kind": ActorKind.AUTO,
            "final_decision_id": a["decision_id"],
        }
    return None


def refresh(conn: sa.Connection, sample_id: str, needed: int) -> bool:
    rows = [
        dict(r) for r in conn.execute(sa.select(standing).where(standing.c.sample_id == sample_id)).mappings()
    ]
    out = outcome_of(needed, rows)
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
        values["state"] = State.OPEN
    else:
        values = {**out, "state": State.FINAL, "final_at": datetime.now(UTC)}
    conn.execute(items.update().where(items.c.sample_id == sample_id).values(**values))
    return out is not None


def rebuild_derived(conn: sa.Connection) -> None:
    """Recompute `standing` and every item's outcome from the decision log (used by migrations)."""
    conn.execute(standing.delete())
    cols = ("id", "sample_id", "actor", "actor_kind", "decision", "reason", "simple_prompt", "previous_id")
    query = sa.select(*(decisions.c[c] for c in cols), decisions.c.created_at).order_by(decisions.c.id)
    log = conn.execute(query).mappings().all()  # the columns every migration from 0002 on has
    current: dict[tuple[str, str], dict[str, Any]] = {}
    for d in log:
        key = (d["sample_id"], d["actor"])
        if d["decision"] == "reopen":  # an admin set the item's decisions aside (surd.review.bulk)
            current = {k: v for k, v in current.items() if k[0] != d["sample_id"]}
        elif d["decision"] == "undo":
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
        refresh(conn, sid, needed)
