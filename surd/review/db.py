"""Open the review database and bring its schema to the newest migration (Alembic).

SQLite runs in WAL mode and every write transaction starts with BEGIN IMMEDIATE, so two
concurrent writers queue on the lock instead of failing on a stale snapshot; PostgreSQL takes row
locks (`FOR UPDATE SKIP LOCKED`) in the claim. A database written by the first release of this
code (table `schema_info`, no Alembic stamp) is stamped as revision 0001 and upgraded in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).parent / "migrations"


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


def connect(url: str, *, upgrade: bool = True) -> sa.Engine:
    """An engine on the queue database, migrated to the newest schema."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(
                "BEGIN" if conn.get_execution_options().get("readonly") else "BEGIN IMMEDIATE"
            )

    if upgrade:
        migrate(engine)
    return engine


def reader(engine: sa.Engine) -> sa.Connection:
    """A connection for reads only: on SQLite it does not take the write lock."""
    return engine.connect().execution_options(readonly=True)
