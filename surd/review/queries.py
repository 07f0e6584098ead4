"""Reading the review queue: an item, a steward's last decision, progress (and its markdown),
open leases, agreement between stewards, and the decision log's exports, in chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from surd.review import comments, reveals
from surd.review.db import reader
from surd.review.kinds import ActorKind, Decision, State
from surd.review.schema import decisions, items, standing


def queued_ids(engine: sa.Engine) -> list[str]:
    with reader(engine) as conn:
        return list(conn.execute(sa.select(items.c.sample_id)).scalars())


STATES = pa.schema(
    [
        pa.field("sample_id", pa.string()),
        pa.field("state", pa.string()),
        pa.field("final_decision", pa.string()),
        pa.field("final_actor_kind", pa.string()),
        pa.field("final_reason", pa.string()),
        pa.field("final_actor", pa.string()),
    ]
)
_BATCH = 4096


def states(engine: sa.Engine) -> pa.Table:
    """Every queued item's state and outcome (schema STATES), streamed into Arrow columns
    _BATCH rows at a time: no Python object per item outlives its batch."""
    query = sa.select(*(items.c[f.name] for f in STATES))
    batches = []
    with reader(engine) as conn:
        result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(query)
        for chunk in result.partitions(_BATCH):
            columns = zip(*chunk, strict=True)
            arrays = [
                pa.array([None if v is None else str(v) for v in c], f.type)
                for c, f in zip(columns, STATES, strict=True)
            ]
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=STATES))
    return pa.Table.from_batches(batches, STATES)


def review_counts(engine: sa.Engine) -> tuple[int, int, dict[str, int]]:
    """Items queued, final accepts, and final rejects by `rejected_by_<actor kind>:<reason>`,
    counted by the database (no row per item comes back)."""
    final = items.c.state == State.FINAL
    with reader(engine) as conn:
        queued = conn.execute(sa.select(sa.func.count()).select_from(items)).scalar_one()
        accepted = conn.execute(
            sa.select(sa.func.count()).where(final, items.c.final_decision == Decision.ACCEPT)
        ).scalar_one()
        by = (items.c.final_actor_kind, items.c.final_reason)
        rows = conn.execute(
            sa.select(*by, sa.func.count())
            .where(final, items.c.final_decision == Decision.REJECT)
            .group_by(*by)
        ).all()
    rejected = {f"rejected_by_{kind}:{reason}": n for kind, reason, n in rows}
    return queued, accepted, dict(sorted(rejected.items()))


def item(engine: sa.Engine, sample_id: str, actor: str | None = None) -> dict[str, Any] | None:
    """One item's payload, lease and outcome, with `actor`'s own standing decision if any."""
    with reader(engine) as conn:
        row = conn.execute(sa.select(items).where(items.c.sample_id == sample_id)).mappings().first()
        if row is None:
            return None
        out = {
            **json.loads(row["payload"]),
            **{k: row[k] for k in ("state", "needed", "lease_owner", "safety_level")},
        }
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
                .where(items.c.state == State.FINAL)
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
            .where(standing.c.actor_kind == ActorKind.HUMAN)
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
        "final": int(by_state.get(State.FINAL, 0)),
        "remaining": int(by_state.get(State.OPEN, 0)),
        "accepted": int(outcomes.get(Decision.ACCEPT, 0)),
        "rejected": int(outcomes.get(Decision.REJECT, 0)),
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
    return _agree([(a, b) for a, b, _ in _audit_pairs(engine)])


def agreement_by_version(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """`agreement` per guideline version (both decisions made under it; "mixed" when they differ,
    "none" before guidelines were recorded)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for a, b, version in _audit_pairs(engine):
        groups.setdefault(version, []).append((a, b))
    return {v: _agree(pairs) for v, pairs in sorted(groups.items())}


def _audit_pairs(engine: sa.Engine) -> list[tuple[str, str, str]]:
    """(first, second decision, guideline version) of each audit item with two human decisions."""
    with reader(engine) as conn:
        rows = conn.execute(
            sa.select(standing.c.sample_id, standing.c.decision, decisions.c.guideline_version)
            .join(items, items.c.sample_id == standing.c.sample_id)
            .join(decisions, decisions.c.id == standing.c.decision_id)
            .where(items.c.needed >= 2, standing.c.actor_kind == ActorKind.HUMAN)
            .order_by(standing.c.sample_id, standing.c.decision_id)
        ).all()
    per: dict[str, list[tuple[str, str | None]]] = {}
    for sid, decision, version in rows:
        per.setdefault(sid, []).append((decision, version))
    out = []
    for v in per.values():
        if len(v) >= 2:
            (a, va), (b, vb) = v[0], v[1]
            out.append((a, b, (va or "none") if va == vb else "mixed"))
    return out


def _agree(both: list[tuple[str, str]]) -> dict[str, Any]:
    if not both:
        return {"audit_items_compared": 0, "agreement": None, "cohen_kappa": None}
    agree = sum(a == b for a, b in both) / len(both)
    pa = sum(a == Decision.ACCEPT for a, _ in both) / len(both)
    pb = sum(b == Decision.ACCEPT for _, b in both) / len(both)
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
    "comments",
)


EXPORTS = ("outcomes", "audit", "reveals")


def export_rows(engine: sa.Engine, what: str = "outcomes", chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Stream every item's outcome (`outcomes`), the whole decision log (`audit`) or the reveal
    log (`reveals`), in id order."""
    if what not in EXPORTS:
        raise ValueError(f"export what: {' or '.join(EXPORTS)}")
    if what == "reveals":
        yield from reveals.rows(engine, chunk)
        return
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
        notes = comments.all_by_item(engine)
        for sid, state, dec, reason, prompt, payload, actor, kind, at, source, margin in result:
            caption = json.loads(payload).get("simple_prompt")
            yield {
                "sample_id": sid,
                "state": state,
                "decision": dec,
                "reason": reason,
                "simple_prompt": prompt or (caption if dec == Decision.ACCEPT else None),
                "caption": caption,
                "actor": actor,
                "actor_kind": kind,
                "decided_at": _aware(at).isoformat() if at else None,
                "source": source,
                "margin": margin,
                "comments": notes.get(sid),
            }
