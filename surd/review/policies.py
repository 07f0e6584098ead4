"""Auto-review policies: decisions by a named rule (`policy:<name>`, actor kind `auto`) on the
open items no human has touched."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from storage.tables import fault_point
from surd.review.db import reader
from surd.review.kinds import ActorKind, Decision, State
from surd.review.queue import decide_many
from surd.review.schema import decisions as decision_log
from surd.review.schema import items, standing

READ_CHUNK = 2048  # open items read at a time


def auto_review(engine: sa.Engine, policy: str, min_margin: float) -> int:
    """Decide every open item no person has touched by a named policy (`policy:<name>`, kind auto).

    demo-margin-v1: reject captions under 3 words, reject a CLIP margin under `min_margin`,
    accept a margin of at least `min_margin + 0.2`, and leave the band between to stewards.
    """
    if policy == "none":
        return 0
    if policy != "demo-margin-v1":
        raise ValueError(f"unknown auto-review policy {policy!r}; valid: none, demo-margin-v1")
    actor = f"policy:{policy}"

    def decisions(rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
        for sid, payload, margin in rows:
            words = len((json.loads(payload).get("simple_prompt") or "").split())
            base = {"sample_id": sid, "actor": actor, "actor_kind": ActorKind.AUTO}
            if words < 3:
                yield {**base, "decision": Decision.REJECT, "reason": "caption_wrong"}
            elif margin is None or margin < min_margin:
                yield {**base, "decision": Decision.REJECT, "reason": "low_margin"}
            elif margin >= min_margin + 0.2:
                yield {**base, "decision": Decision.ACCEPT}

    # the open items are read a chunk at a time from one snapshot while the decisions are written
    # on other connections (WAL on SQLite, MVCC on PostgreSQL): memory holds one chunk
    with reader(engine) as conn:
        rows = conn.execution_options(stream_results=True, yield_per=READ_CHUNK).execute(
            sa.select(items.c.sample_id, items.c.payload, items.c.margin).where(
                items.c.state == State.OPEN,
                ~sa.exists(sa.select(standing.c.sample_id).where(standing.c.sample_id == items.c.sample_id)),
                # nor one a person has touched: a steward's decision or undo, an admin's reopen
                # (which sets the standing decisions aside: it is open for people, not for a policy)
                ~sa.exists(
                    sa.select(decision_log.c.id).where(
                        decision_log.c.sample_id == items.c.sample_id,
                        decision_log.c.actor_kind != ActorKind.AUTO,
                    )
                ),
            )
        )
        return decide_many(engine, decisions(rows), each=lambda n: fault_point("review", n))
