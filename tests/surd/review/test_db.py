"""Opening the review database: many processes at once, the first of them creating it."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from pathlib import Path

import pytest

from surd.review import queries, queue
from surd.review.db import current_revision, head_revision

pytestmark = pytest.mark.slow  # processes opening one database at once, PostgreSQL: not in `make test-fast`


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review' / 'q.db'}"
    return request.getfixturevalue("postgres").new_database()


def _open(url: str, start: float) -> str:
    time.sleep(max(0.0, start - time.time()))  # all at the same moment
    try:
        engine = queue.connect(url)
        queries.queued_ids(engine)
        engine.dispose()
    except Exception as exc:  # reported to the test, which fails on it
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_processes_opening_a_new_database_at_once_all_get_the_newest_schema(url: str) -> None:
    ctx = mp.get_context("spawn")
    for _ in range(2):  # the new database, then the migrated one
        start = time.time() + 3.0
        with ctx.Pool(4) as pool:
            said = pool.starmap(_open, [(url, start)] * 4)
        assert said == ["ok"] * 4
    engine = queue.connect(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def _hold_new_file(path: str, ready, seconds: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE another_writer (x)")
    ready.set()
    time.sleep(seconds)
    conn.execute("COMMIT")


def test_a_new_sqlite_file_another_process_holds_is_waited_for_not_refused(tmp_path: Path) -> None:
    """Switching a new file to WAL needs its exclusive lock, and SQLite refuses at once (no busy
    handler) while another connection holds one: connect waits for it instead."""
    path = tmp_path / "q.db"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_new_file, args=(str(path), ready, 1.5))
    holder.start()
    try:
        assert ready.wait(30)
        began = time.monotonic()
        engine = queue.connect(f"sqlite:///{path}")
        assert time.monotonic() - began >= 1.0  # it waited for the holder
        assert current_revision(engine) == head_revision()
        engine.dispose()
    finally:
        holder.join(30)
    assert holder.exitcode == 0
