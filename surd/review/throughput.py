"""Stewards' pace, from the decision log: per steward and view, how many decisions, how many an
hour of reviewing, and the seconds a decision took (median, p90).

A decision's time is the gap since the steward's previous decision (any view), shared among the
decisions of one request (a grid page's accepts and rejects carry one timestamp). A gap longer
than BREAK_S is a pause, not work: the decisions after it count, untimed. Decisions per hour are
timed decisions over the time they took."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from surd.review.db import reader
from surd.review.kinds import ActorKind, Decision
from surd.review.schema import decisions

BREAK_S = 600.0  # a gap longer than this between two decisions is a pause


def _requests(engine: sa.Engine) -> Iterator[tuple[str, datetime, list[str]]]:
    """(steward, when, the views of its decisions) per request, each steward's in time order."""
    q = (
        sa.select(decisions.c.actor, decisions.c.created_at, decisions.c.view)
        .where(
            decisions.c.actor_kind == ActorKind.HUMAN,
            decisions.c.decision.in_([Decision.ACCEPT, Decision.REJECT]),
        )
        .order_by(decisions.c.actor, decisions.c.created_at, decisions.c.id)
    )
    with reader(engine) as conn:
        group: tuple[str, datetime, list[str]] | None = None
        for actor, at, view in conn.execution_options(yield_per=5000).execute(q):
            if group is not None and (group[0], group[1]) == (actor, at):
                group[2].append(view or "unknown")
                continue
            if group is not None:
                yield group
            group = (actor, at, [view or "unknown"])
        if group is not None:
            yield group


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]  # nearest rank


def by_steward(engine: sa.Engine) -> list[dict[str, Any]]:
    """One row per steward and view: decisions, timed, per_hour, median_s, p90_s (None untimed)."""
    seconds: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], int] = {}
    last: tuple[str, datetime] | None = None
    for actor, at, views in _requests(engine):
        gap = (at - last[1]).total_seconds() if last is not None and last[0] == actor else None
        for view in views:
            counts[(actor, view)] = counts.get((actor, view), 0) + 1
            if gap is not None and gap <= BREAK_S:
                seconds.setdefault((actor, view), []).append(gap / len(views))
        last = (actor, at)
    rows = []
    for (actor, view), n in sorted(counts.items()):
        timed = seconds.get((actor, view), [])
        total = sum(timed)
        rows.append(
            {
                "steward": actor,
                "view": view,
                "decisions": n,
                "timed": len(timed),
                "per_hour": round(len(timed) * 3600 / total, 1) if total > 0 else None,
                "median_s": round(statistics.median(timed), 2) if timed else None,
                "p90_s": round(_p90(timed), 2) if timed else None,
            }
        )
    return rows
