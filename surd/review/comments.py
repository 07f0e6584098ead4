"""Stewards' comments and flags on items: append-only, shown to admins, exported with the outcomes.
A flag asks an admin to look at the item (a doubt, a problem with the guidelines, a takedown)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from surd.review.db import reader
from surd.review.schema import comments, items
from surd.review.text import hidden_characters

MAX_TEXT = 2000


def add(engine: sa.Engine, sample_id: str, author: str, text: str, flag: bool = False) -> int:
    """Record a comment (or a flag); ValueError, with what a steward sees, when it cannot be."""
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
        row = {
            "sample_id": sample_id,
            "author": author,
            "flag": flag,
            "text": text,
            "created_at": datetime.now(UTC),
        }
        return int(conn.execute(comments.insert().values(**row)).inserted_primary_key[0])  # type: ignore[index]


def recent(engine: sa.Engine, n: int = 100, flags_only: bool = False) -> list[dict[str, Any]]:
    q = sa.select(comments).order_by(comments.c.id.desc()).limit(n)
    if flags_only:
        q = q.where(comments.c.flag)
    with reader(engine) as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


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
