"""Open the review database and bring its schema to the newest migration (Alembic).

SQLite runs in WAL mode and every write transaction starts with BEGIN IMMEDIATE, so two
concurrent writers queue on the lock instead of failing on a stale snapshot; PostgreSQL takes row
locks (`FOR UPDATE SKIP LOCKED`) in the claim. A database written by the first release of this
code (table `schema_info`, no Alembic stamp) is stamped as revision 0001 and upgraded in place.

Many processes open the database at once (overlapping runs, review workers, `surd status`), and
the first of them creates it: migrations are serialised (an `flock` beside an SQLite file, an
advisory lock on PostgreSQL), and SQLite waits up to `BUSY_TIMEOUT_S` for a lock from the very
first statement of a connection, not only after its pragmas have run.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_S = 60
PG_MIGRATION_LOCK = 0x5355_5244  # "SURD": the advisory lock that serialises migrations on PostgreSQL


class QueueSchemaError(RuntimeError):
    pass


def _alembic_config(conn: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the schema (idempotent); refuse a database newer than this code."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
        insp = sa.inspect(conn)
        current = MigrationContext.configure(conn).get_current_revision()
        if current is None and insp.has_table("schema_info"):
            version = conn.execute(sa.text("SELECT version FROM schema_info")).scalar()
            if version != 1:
                raise QueueSchemaError(f"queue database has schema {version}; this code knows 1 and up")
            command.stamp(_alembic_config(conn), "0001")
            current = "0001"
        known = {s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
        if current is not None and current not in known:
            raise QueueSchemaError(
                f"queue database is at revision {current}, newer than this code ({head_revision()}); "
                "upgrade surd-builder"
            )
        command.upgrade(_alembic_config(conn), revision)


@contextmanager
def _one_migrator(db_file: Path | None) -> Iterator[None]:
    """Hold an exclusive `flock` beside an SQLite file while migrating: the kernel frees it if
    the process dies. Other databases lock inside `migrate`."""
    if db_file is None:
        yield
        return
    fd = os.open(db_file.with_name(db_file.name + ".migrate.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _sqlite_file(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _to_wal(cur: Any) -> None:
    """Switch to WAL mode. On a new file this needs the exclusive lock, and SQLite answers "locked"
    at once (no busy handler) when another connection is switching it too: try again until
    BUSY_TIMEOUT_S."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class NoDatabase(LookupError):
    """A reader found no review database (nothing was ever queued): it never creates one."""


def busy_timeout(url: sa.URL) -> float:
    """How long an SQLite connection waits for another's lock: the URL's `timeout` (sqlite3's own
    parameter, e.g. `sqlite:///queue.db?timeout=5`), else BUSY_TIMEOUT_S."""
    return float(url.query.get("timeout", BUSY_TIMEOUT_S))  # type: ignore[arg-type]


def open_reader(url: str) -> sa.Engine:
    """An engine that only reads: never creates, migrates or writes the database (a read-only data
    root works; an SQLite file on a read-only filesystem is opened as immutable). NoDatabase when
    an SQLite file does not exist yet."""
    parsed = sa.make_url(url)
    db_file = _sqlite_file(parsed)
    if db_file is None:
        return sa.create_engine(url, pool_pre_ping=True)
    if not db_file.exists():
        raise NoDatabase(f"no review database at {db_file} yet: nothing has been queued")
    writable = os.access(db_file.parent, os.W_OK) and not _read_only_fs(db_file.parent)
    mode = "mode=ro" if writable else "mode=ro&immutable=1"
    uri = f"file:{db_file}?{mode}"
    return sa.create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, timeout=busy_timeout(parsed), check_same_thread=False),
    )


def _read_only_fs(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def connect(url: str, *, upgrade: bool = True) -> sa.Engine:
    """An engine on the queue database, migrated to the newest schema."""
    parsed = sa.make_url(url)
    db_file = _sqlite_file(parsed)
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    sqlite = parsed.get_backend_name() == "sqlite"
    timeout = busy_timeout(parsed)
    if sqlite and "timeout" in parsed.query:
        url = parsed.difference_update_query(["timeout"]).render_as_string(hide_password=False)
    # sqlite3's own busy handler, in force before the pragmas below run
    args = {"timeout": timeout} if sqlite else {}
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=args)
    if sqlite:

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            _to_wal(cur)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(
                "BEGIN" if conn.get_execution_options().get("readonly") else "BEGIN IMMEDIATE"
            )

    if upgrade:
        with _one_migrator(db_file):
            migrate(engine)
    return engine


def reader(engine: sa.Engine) -> sa.Connection:
    """A connection for reads only: on SQLite it does not take the write lock."""
    return engine.connect().execution_options(readonly=True)
