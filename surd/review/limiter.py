"""Failed logins, counted in the review database so that every server worker shares them.

Two keys per attempt. The client address: at most `per_minute` failures a minute, whatever the
names tried. The address with the name: from the third failure on, each one doubles the wait
before the next try (1 s, 2 s, 4 s, … up to 15 minutes). A name attacked from other addresses is
therefore slowed there, never locked for the real steward, whose address keeps its own keys. A
success clears the address-and-name key. Rows expire after an hour, and the table never holds more
than `MAX_ROWS` (the oldest go first): memory and disk stay bounded whatever is tried.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from surd.review.schema import login_limits

MAX_ROWS = 20_000
EXPIRE = timedelta(hours=1)
FREE_FAILURES = 2  # typos before the per-name delay starts
MAX_DELAY_S = 900.0


def _keys(address: str, name: str) -> tuple[str, str]:
    return f"a:{address}"[:400], f"p:{address}\n{name}"[:400]


def wait_seconds(engine: sa.Engine, address: str, name: str, now: datetime | None = None) -> float:
    """Seconds before this address may try this name again (0: now)."""
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(login_limits.c.not_before).where(login_limits.c.key.in_(_keys(address, name)))
        ).scalars()
        latest = max((_aware(t) for t in rows), default=now)
    return max(0.0, (latest - now).total_seconds())


def failed(engine: sa.Engine, address: str, name: str, per_minute: int, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    addr, pair = _keys(address, name)
    with engine.begin() as conn:
        for key in (addr, pair):
            row = conn.execute(sa.select(login_limits).where(login_limits.c.key == key)).mappings().first()
            start = _aware(row["window_start"]) if row else now
            failures = row["failures"] if row else 0
            if key == addr and now - start > timedelta(minutes=1):
                start, failures = now, 0  # a new minute for the address
            failures += 1
            if key == addr:
                not_before = start + timedelta(minutes=1) if failures >= per_minute else now
            else:
                extra = failures - FREE_FAILURES
                delay = min(2.0 ** (extra - 1), MAX_DELAY_S) if extra > 0 else 0.0
                not_before = now + timedelta(seconds=delay)
            values = {"failures": failures, "window_start": start, "not_before": not_before, "last_at": now}
            if row:
                conn.execute(login_limits.update().where(login_limits.c.key == key).values(**values))
            else:
                conn.execute(login_limits.insert().values(key=key, **values))
        _prune(conn, now)


def succeeded(engine: sa.Engine, address: str, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(login_limits.delete().where(login_limits.c.key == _keys(address, name)[1]))


def size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(login_limits)).scalar_one())


def _prune(conn: sa.Connection, now: datetime) -> None:
    conn.execute(login_limits.delete().where(login_limits.c.last_at < now - EXPIRE))
    over = conn.execute(sa.select(sa.func.count()).select_from(login_limits)).scalar_one() - MAX_ROWS
    if over > 0:
        oldest = sa.select(login_limits.c.key).order_by(login_limits.c.last_at).limit(over)
        conn.execute(login_limits.delete().where(login_limits.c.key.in_(oldest.scalar_subquery())))


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
