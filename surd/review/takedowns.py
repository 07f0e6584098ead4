"""The takedown log in the review database: who asked for what to be removed, who entered it and
when (append-only), and the releases deleted because they held taken-down rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from surd.review.db import reader
from surd.review.schema import release_approvals, release_prunes, takedowns
from surd.review.text import clean_prompt, hidden_characters
from surd.sources import SOURCES

KINDS = ("sample", "item", "creator", "url")
MAX_TARGET = 2048  # a URL's practical limit; a creator or item id is far shorter


def _target(kind: str, value: str) -> tuple[str | None, str]:
    """(source, value) of a takedown target; ValueError (the message a user sees) if malformed."""
    value = (value or "").strip()
    if len(value) > MAX_TARGET:
        raise ValueError(f"a takedown target is at most {MAX_TARGET} characters; got {len(value)}")
    if hidden_characters(value):
        raise ValueError(
            "a takedown target may not hold control or formatting characters (NUL, right-to-left "
            "override, …): give it as the site shows it"
        )
    if kind not in KINDS:
        raise ValueError(f"unknown takedown kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind in ("item", "creator"):
        source, _, rest = value.partition(":")
        if source not in SOURCES or not rest.strip():
            what = "ITEM_ID" if kind == "item" else "NAME"
            valid = ", ".join(SOURCES)
            raise ValueError(f"--{kind} takes SOURCE:{what}, SOURCE one of {valid}; got {value!r}")
        return source, rest.strip()
    if kind == "url":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--url takes an http(s) URL; got {value!r}")
        return None, value
    if not value or len(value) > 64 or not value.isalnum():
        raise ValueError(f"--sample takes a sample id (letters and digits); got {value!r}")
    return None, value


def add(
    engine: sa.Engine, kind: str, value: str, reason: str, actor: str, requested_by: str | None = None
) -> dict[str, Any]:
    """Record a takedown; returns it as stored (with its id). ValueError: what is wrong."""
    source, target = _target(kind, value)
    why = clean_prompt(reason)
    if not why:
        raise ValueError("a takedown needs a reason (--reason)")
    row: dict[str, Any] = {
        "kind": kind,
        "source": source,
        "value": target,
        "reason": why,
        "requested_by": clean_prompt(requested_by),
        "actor": actor,
        "created_at": datetime.now(UTC),
    }
    with engine.begin() as conn:
        row["id"] = int(conn.execute(takedowns.insert().values(**row)).inserted_primary_key[0])  # type: ignore[index]
    return row


def entries(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every takedown, oldest first."""
    with reader(engine) as conn:
        return [dict(r) for r in conn.execute(sa.select(takedowns).order_by(takedowns.c.id)).mappings()]


def record_prune(
    engine: sa.Engine, release: str, superseded_by: str, location: str, rows: int, actor: str
) -> None:
    with engine.begin() as conn:
        conn.execute(
            release_prunes.insert().values(
                release=release,
                superseded_by=superseded_by,
                location=location,
                taken_down_rows=rows,
                actor=actor,
                created_at=datetime.now(UTC),
            )
        )


def prunes(engine: sa.Engine) -> list[dict[str, Any]]:
    with reader(engine) as conn:
        return [
            dict(r) for r in conn.execute(sa.select(release_prunes).order_by(release_prunes.c.id)).mappings()
        ]


def record_approval(engine: sa.Engine, release: str, held_for: list[str], reason: str, actor: str) -> None:
    """A held release let out by a person: which, what held it, why it goes out, who, when."""
    if not reason.strip():
        raise ValueError("an approval needs a reason")
    with engine.begin() as conn:
        conn.execute(
            release_approvals.insert().values(
                release=release,
                held_for="\n".join(held_for),
                reason=reason.strip(),
                actor=actor,
                created_at=datetime.now(UTC),
            )
        )


def approvals(engine: sa.Engine) -> list[dict[str, Any]]:
    with reader(engine) as conn:
        rows = conn.execute(sa.select(release_approvals).order_by(release_approvals.c.id)).mappings()
        return [dict(r) for r in rows]
