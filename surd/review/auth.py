"""Steward accounts: argon2-hashed passwords, roles admin and steward, API bearer tokens.

A token is shown once when created; the database keeps only its SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from surd.review.db import reader
from surd.review.kinds import steward_name_problem
from surd.review.schema import stewards, tokens

ROLES = ("steward", "admin")
_hasher = PasswordHasher()


MAX_NAME = 128
MAX_PASSWORD = 1024


def add_steward(engine: sa.Engine, name: str, password: str, role: str = "steward") -> None:
    """Create a steward, or reset their password and role: either way every session of the
    account ends (a new session key); its API tokens stay (revoke them with `revoke_tokens`)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if problem := steward_name_problem(name, MAX_NAME):
        raise ValueError(problem)
    if not 8 <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a password needs 8 to {MAX_PASSWORD} characters")
    values = {"password_hash": _hasher.hash(password), "role": role, "session_key": secrets.token_hex(32)}
    with engine.begin() as conn:
        updated = conn.execute(stewards.update().where(stewards.c.name == name).values(**values)).rowcount
        if not updated:
            conn.execute(stewards.insert().values(name=name, created_at=datetime.now(UTC), **values))


def account(engine: sa.Engine, name: str) -> tuple[str, str] | None:
    """(role, session key) of the account, or None if it is gone."""
    with reader(engine) as conn:
        row = conn.execute(
            sa.select(stewards.c.role, stewards.c.session_key).where(stewards.c.name == name)
        ).first()
    return None if row is None or row[1] is None else (str(row[0]), str(row[1]))


def session_key(engine: sa.Engine, name: str) -> str | None:
    """The key every live session of the account carries; None if the account is gone."""
    with reader(engine) as conn:
        key = conn.execute(sa.select(stewards.c.session_key).where(stewards.c.name == name)).scalar()
    return None if key is None else str(key)


def end_sessions(engine: sa.Engine, name: str) -> None:
    """End every session of the account at once (a new key: old cookies no longer match)."""
    with engine.begin() as conn:
        conn.execute(
            stewards.update().where(stewards.c.name == name).values(session_key=secrets.token_hex(32))
        )


def list_stewards(engine: sa.Engine) -> list[dict[str, str]]:
    with reader(engine) as conn:
        rows = conn.execute(sa.select(stewards.c.name, stewards.c.role).order_by(stewards.c.name)).all()
    return [{"name": n, "role": r} for n, r in rows]


def check(engine: sa.Engine, name: str, password: str) -> str | None:
    """The steward's role when the password matches, else None."""
    if len(name) > MAX_NAME or len(password) > MAX_PASSWORD:
        return None  # never hash a megabyte
    with reader(engine) as conn:
        row = conn.execute(sa.select(stewards).where(stewards.c.name == name)).mappings().first()
    if row is None:
        _hasher.hash(password)  # same work either way: no user enumeration by timing
        return None
    try:
        _hasher.verify(row["password_hash"], password)
    except VerificationError:
        return None
    return str(row["role"])


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(engine: sa.Engine, name: str) -> str:
    """A new API token for an existing steward; only its hash is stored."""
    token = "surd_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if conn.execute(sa.select(stewards.c.name).where(stewards.c.name == name)).first() is None:
            raise ValueError(f"no steward {name!r}")
        conn.execute(
            tokens.insert().values(token_sha256=_digest(token), steward=name, created_at=datetime.now(UTC))
        )
    return token


def check_token(engine: sa.Engine, token: str) -> tuple[str, str] | None:
    """(steward, role) for a valid token, else None."""
    with reader(engine) as conn:
        row = conn.execute(
            sa.select(stewards.c.name, stewards.c.role)
            .join(tokens, tokens.c.steward == stewards.c.name)
            .where(tokens.c.token_sha256 == _digest(token))
        ).first()
    return (str(row[0]), str(row[1])) if row else None


def remove_steward(engine: sa.Engine, name: str) -> bool:
    """Delete the account and its API tokens (their decisions stay in the log). True if it existed."""
    with engine.begin() as conn:
        conn.execute(tokens.delete().where(tokens.c.steward == name))
        return bool(conn.execute(stewards.delete().where(stewards.c.name == name)).rowcount)


def revoke_tokens(engine: sa.Engine, name: str) -> int:
    """Revoke every API token of a steward; returns how many."""
    with engine.begin() as conn:
        return int(conn.execute(tokens.delete().where(tokens.c.steward == name)).rowcount or 0)


def token_counts(engine: sa.Engine) -> dict[str, int]:
    with reader(engine) as conn:
        rows = conn.execute(sa.select(tokens.c.steward, sa.func.count()).group_by(tokens.c.steward)).all()
    return {str(n): int(c) for n, c in rows}
