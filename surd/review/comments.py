"""Stewards' comments and flags on items: append-only, shown to admins, exported with the outcomes.
A flag asks an admin to look at the item (a doubt, a problem with the guidelines, a takedown)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from surd.review.db import reader
from surd.review.schema import comments, items
from surd.review.text import hidden_characters

MAX_TEXT = 2000
PAGE = 50  # comments (and, apart, flags) on a page of the admin page


class TooMany(ValueError):
    """A comment past a cap: the item's, or the steward's in the last minute (HTTP 429)."""


def add(
    engine: sa.Engine,
    sample_id: str,
    author: str,
    text: str,
    flag: bool = False,
    per_item: int | None = None,
    per_minute: int | None = None,
) -> int:
    """Record a comment (or a flag); ValueError, with what a steward sees, when it cannot be
    (TooMany past `per_item` comments on the item or `per_minute` of the author's in a minute)."""
    text = (text or "").strip()
    if not text and not flag:
        raise ValueError("a comment needs some text")
    if len(text) > MAX_TEXT:
        raise ValueError(f"a comment has at most {MAX_TEXT} characters; this one has {len(text)}")
    if hidden_characters(text, allow="\n\t"):
        raise ValueError("a comment may not hold control or formatting characters")
    with engine.begin() as conn:
        if conn.execute(sa.select(items.c.sample_id).where(items.c.sample_id == sample_id)).first() is None:
            raise ValueError(f"no item {sample_id!r} in the queue")
        _within_caps(conn, sample_id, author, per_item, per_minute)
        row = {
            "sample_id": sample_id,
            "author": author,
            "flag": flag,
            "text": text,
            "created_at": datetime.now(UTC),
        }
        return int(conn.execute(comments.insert().values(**row)).inserted_primary_key[0])  # type: ignore[index]


def _within_caps(
    conn: sa.Connection, sample_id: str, author: str, per_item: int | None, per_minute: int | None
) -> None:
    """Counted in the writing transaction (SQLite's are serial; PostgreSQL's take a lock on the
    item), so comments at once cannot all slip under a cap."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"comment:{sample_id}"})
    count = sa.select(sa.func.count()).select_from(comments)
    on_item = conn.execute(count.where(comments.c.sample_id == sample_id)).scalar_one()
    if per_item is not None and on_item >= per_item:
        raise TooMany(f"item {sample_id} has its {per_item} comments already; an admin can read them all")
    since = datetime.now(UTC) - timedelta(minutes=1)
    mine = count.where(comments.c.author == author, comments.c.created_at > since)
    if per_minute is not None and conn.execute(mine).scalar_one() >= per_minute:
        raise TooMany(f"at most {per_minute} comments a minute: wait a moment and send it again")


def page(engine: sa.Engine, flags: bool, before: int | None = None, n: int = PAGE) -> dict[str, Any]:
    """A page of the flags (or of the other comments), newest first, and the id the next, older
    page starts before (None: this is the last). Flags have their own pages, so no number of
    comments ever pushes one off the admin page."""
    q = sa.select(comments).where(comments.c.flag if flags else ~comments.c.flag)
    if before is not None:
        q = q.where(comments.c.id < before)
    with reader(engine) as conn:
        rows = [dict(r) for r in conn.execute(q.order_by(comments.c.id.desc()).limit(n + 1)).mappings()]
    return {"rows": rows[:n], "older": rows[n - 1]["id"] if len(rows) > n else None}


def of(engine: sa.Engine, sample_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The comments on each of these items, oldest first."""
    ids = sorted(set(sample_ids))
    out: dict[str, list[dict[str, Any]]] = {}
    with reader(engine) as conn:
        for k in range(0, len(ids), 500):
            q = sa.select(comments).where(comments.c.sample_id.in_(ids[k : k + 500])).order_by(comments.c.id)
            for r in conn.execute(q).mappings():
                out.setdefault(r["sample_id"], []).append(dict(r))
    return out


def all_by_item(engine: sa.Engine) -> dict[str, str]:
    """Every item's comments as one text (author: text, flags marked), for the exports."""
    out: dict[str, list[str]] = {}
    with reader(engine) as conn:
        for r in conn.execute(sa.select(comments).order_by(comments.c.id)).mappings():
            mark = "[flag] " if r["flag"] else ""
            out.setdefault(r["sample_id"], []).append(f"{r['author']}: {mark}{r['text']}")
    return {k: "\n".join(v) for k, v in out.items()}
