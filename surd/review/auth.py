"""Steward accounts: argon2-hashed passwords, roles admin and steward."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from surd.review.queue import meta

stewards = sa.Table(
    "stewards",
    meta,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
ROLES = ("steward", "admin")
_hasher = PasswordHasher()


def add_steward(engine: sa.Engine, name: str, password: str, role: str = "steward") -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(stewards.delete().where(stewards.c.name == name))
        conn.execute(
            stewards.insert().values(
                name=name, password_hash=_hasher.hash(password), role=role, created_at=datetime.now(UTC)
            )
        )


def check(engine: sa.Engine, name: str, password: str) -> str | None:
    """The steward's role when the password matches, else None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(stewards).where(stewards.c.name == name)).mappings().first()
    if row is None:
        _hasher.hash(password)  # same work either way: no user enumeration by timing
        return None
    try:
        _hasher.verify(row["password_hash"], password)
    except VerificationError:
        return None
    return str(row["role"])
