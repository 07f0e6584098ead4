"""Failed logins, counted in the review database so that every server worker shares them.

Two keys per attempt. The client address: at most `per_minute` failures a minute, whatever the
names tried. The address with the name: from the third failure on, each one doubles the wait
before the next try (1 s, 2 s, 4 s, … up to 15 minutes). A name attacked from other addresses is
therefore slowed there, never locked for the real steward, whose address keeps its own keys.

An attempt is reserved before its password is checked: `reserve` counts it as a failure, in the
same transaction as the check of the limits, so N attempts at once count as N (a check first and
a count after the slow password hash let them all through). A success gives the address's count
back and clears the address-and-name key. Rows expire after an hour; the table never holds more
than `MAX_ROWS`: the oldest rows whose wait is over go first, and a row still locked out is never
evicted; when every row is locked, a new key is refused (as limited) instead of evicting one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from surd.review.schema import login_limits

MAX_ROWS = 20_000
EXPIRE = timedelta(hours=1)
FREE_FAILURES = 2  # typos before the per-name delay starts
MAX_DELAY_S = 900.0
FULL_WAIT_S = 60.0  # the wait told when the table is full of locked-out rows
LOCK_ID = 0x5355_5244  # PostgreSQL: one advisory lock serialises the limiter's transactions


def _keys(address: str, name: str) -> tuple[str, str]:
    return f"a:{address}"[:400], f"p:{address}\n{name}"[:400]


def _serialise(conn: sa.Connection) -> None:
    """Limiter transactions one at a time: SQLite's BEGIN IMMEDIATE does it (surd.review.db);
    PostgreSQL takes a transaction-scoped advisory lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": LOCK_ID})


def wait_seconds(engine: sa.Engine, address: str, name: str, now: datetime | None = None) -> float:
    """Seconds before this address may try this name again (0: now)."""
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(login_limits.c.not_before).where(login_limits.c.key.in_(_keys(address, name)))
        ).scalars()
        latest = max((_aware(t) for t in rows), default=now)
    return max(0.0, (latest - now).total_seconds())


def reserve(
    engine: sa.Engine, address: str, name: str, per_minute: int, now: datetime | None = None
) -> float:
    """Count an attempt as a failure before its password is checked, if the limits allow one now;
    returns 0.0 when reserved, else the seconds to wait (nothing counted)."""
    addr, pair = _keys(address, name)
    with engine.begin() as conn:
        _serialise(conn)
        now = now or datetime.now(UTC)  # read under the lock: no later writer's `now` is ahead of it
        rows = _rows(conn, addr, pair)
        waits = [(_aware(r["not_before"]) - now).total_seconds() for r in rows.values()]
        if max(waits, default=0.0) > 0:
            return max(waits)
        new = [k for k in (addr, pair) if k not in rows]
        if new and not _room(conn, now, len(new)):
            return FULL_WAIT_S
        for key in (addr, pair):
            _count(conn, key, rows.get(key), key == addr, per_minute, now)
    return 0.0


def _rows(conn: sa.Connection, *keys: str) -> dict[str, sa.RowMapping]:
    q = sa.select(login_limits).where(login_limits.c.key.in_(keys))
    return {r["key"]: r for r in conn.execute(q).mappings()}


def _count(
    conn: sa.Connection, key: str, row: sa.RowMapping | None, is_address: bool, per_minute: int, now: datetime
) -> None:
    start = _aware(row["window_start"]) if row else now
    failures = row["failures"] if row else 0
    if is_address and now - start > timedelta(minutes=1):
        start, failures = now, 0  # a new minute for the address
    failures += 1
    if is_address:
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


def failed(engine: sa.Engine, address: str, name: str, per_minute: int, now: datetime | None = None) -> None:
    """Count a failure whatever the limits say (what `reserve` does when they allow it)."""
    addr, pair = _keys(address, name)
    with engine.begin() as conn:
        _serialise(conn)
        now = now or datetime.now(UTC)
        rows = _rows(conn, addr, pair)
        if _room(conn, now, sum(k not in rows for k in (addr, pair))):
            for key in (addr, pair):
                _count(conn, key, rows.get(key), key == addr, per_minute, now)


def succeeded(engine: sa.Engine, address: str, name: str) -> None:
    """A reserved attempt that succeeded: the address gets it back; the name's key is cleared."""
    addr, pair = _keys(address, name)
    with engine.begin() as conn:
        _serialise(conn)
        conn.execute(login_limits.delete().where(login_limits.c.key == pair))
        conn.execute(
            login_limits.update()
            .where(login_limits.c.key == addr, login_limits.c.failures > 0)
            .values(failures=login_limits.c.failures - 1)
        )


def size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(login_limits)).scalar_one())


def _room(conn: sa.Connection, now: datetime, needed: int) -> bool:
    """Make room for `needed` new rows: expired rows go, then the oldest rows whose wait is over;
    False when the table stays full of rows still locked out (never evicted)."""
    conn.execute(login_limits.delete().where(login_limits.c.last_at < now - EXPIRE))
    total = conn.execute(sa.select(sa.func.count()).select_from(login_limits)).scalar_one()
    over = total + needed - MAX_ROWS
    if over > 0:
        free = (
            sa.select(login_limits.c.key)
            .where(login_limits.c.not_before <= now)
            .order_by(login_limits.c.last_at)
            .limit(over)
        )
        conn.execute(login_limits.delete().where(login_limits.c.key.in_(free.scalar_subquery())))
        total = conn.execute(sa.select(sa.func.count()).select_from(login_limits)).scalar_one()
    return bool(total + needed <= MAX_ROWS)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
