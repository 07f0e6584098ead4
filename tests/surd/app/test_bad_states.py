"""Bad states are errors with a way out: a busy review database, a read-only or missing data root,
a damaged table part, SQL that would write, an oversized request body, a hostile takedown target,
judge images that could unblind a judge."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from surd.app.cli import main
from surd.app.web.app import create_app
from surd.config import load_settings
from surd.review import auth, queue
from tests.conftest import free_port
from tests.serve import ThreadedServer


def surd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    got = capsys.readouterr()
    return int(done.value.code or 0), got.out, got.err


@pytest.fixture
def copy(released_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    c = released_copy
    monkeypatch.setenv("SURD_DATA_ROOT", str(c))
    monkeypatch.setenv("SURD_PROFILE", "tiny")
    return c


@pytest.mark.slow  # a second process holding the write lock, and the CLI: 13 s
def test_a_busy_review_database_is_503_on_the_web_and_exit_6_in_the_cli(
    copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = copy / "review" / "queue.db"
    url = f"sqlite:///{db}?timeout=1"  # wait a second for the lock, not a minute
    monkeypatch.setenv("SURD_REVIEW__DATABASE_URL", url)
    s = load_settings()
    engine = queue.connect(url)
    auth.add_steward(engine, "alice", "alice password")
    token = auth.new_token(engine, "alice")
    engine.dispose()
    app = create_app(s)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write
    try:
        with ThreadedServer(app, free_port()) as srv, httpx.Client(base_url=srv.url) as c:
            r = c.post("/api/claim", json={"n": 1}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "30" and "busy" in r.json()["detail"]
        code, _, err = surd(capsys, "takedown", "add", "--sample", "abc123", "--reason", "asked")
        assert code == 6 and len(err.strip().splitlines()) == 1 and "review database is busy" in err, err
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_readers_never_create_a_data_root_or_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("SURD_DATA_ROOT", str(missing))
    for argv in (["takedown", "list"], ["review", "export", str(tmp_path / "x.parquet")], ["status"]):
        code, _, err = surd(capsys, *argv)
        assert code == 3 and "does not exist" in err, (argv, err)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SURD_DATA_ROOT", str(empty))
    code, out, _ = surd(capsys, "takedown", "list")
    assert code == 0 and out.strip() == "no takedowns" and list(empty.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_read_commands_work_on_a_read_only_data_root(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(copy), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        monkeypatch.setenv("SURD_DATA_ROOT", str(ro))
        for argv in (
            ["status"],
            ["sql", "select count(*) from raw_items"],
            ["release", "list"],
            ["release", "verify"],
            ["takedown", "list"],
            ["review", "export", str(tmp_path / "out.parquet")],
        ):
            code, _, err = surd(capsys, *argv)
            assert code == 0, (argv, err)
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)


def test_a_damaged_part_is_named_by_release_create(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    part = sorted((copy / "tables" / "captions").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:300])
    code, _, err = surd(capsys, "release", "create")
    assert code == 3 and str(part) in err and "internal error" not in err, err


SHARD = "{root}/releases/v0001/shard-00000.parquet"
REFUSED = {  # every form of a write, a setting, an extension or a file outside the views
    "copy": "copy (select * from raw_items) to '{leak}'",
    "copy over a shard": "copy (select 1 as x) to '" + SHARD + "' (format parquet)",
    "export": "export database '{tmp}/exported'",
    "attach": "attach '{tmp}/x.db' as x",
    "set": "set threads = 1",
    "reset": "reset threads",
    "load": "load json",
    "install": "install httpfs",
    "pragma": "pragma threads = 1",
    "create": "create table t as select * from raw_items",
    "create temp": "create temp table t as select 1",
    "insert": "insert into raw_items select * from raw_items",
    "drop view": "drop view raw_items",
    "checkpoint": "checkpoint",
    "two statements": "select 1; copy (select 1) to '{leak}'",
    "explain copy": "explain copy (select 1) to '{leak}'",
    "explain analyze copy": "explain analyze copy (select 1 as x) to '" + SHARD + "' (format parquet)",
    "explain analyze set": "explain analyze set threads = 1",
    "explain analyze create": "explain analyze create table t as select 1",
    "explain analyze drop": "explain analyze drop view raw_items",
    "explain analyze attach": "explain analyze attach '{tmp}/y.db' as y",
    "explain (options) export": "explain (format json) export database '{tmp}/exported'",
    "cte": "with a as (select 1 as x) copy (select * from a) to '{leak}'",
    "cte over a write": "with a as (insert into raw_items select * from raw_items returning *) select * from a",
    "subquery": "select * from (copy (select 1) to '{leak}')",
    "read a file outside": "select * from read_csv('/etc/passwd')",
    "read a file inside": "select * from read_parquet('" + SHARD + "')",
    "glob": "select * from glob('/etc/*')",
    "query()": "select * from query('copy (select 1) to ''{leak}''')",
}


@pytest.mark.parametrize("form", REFUSED)
def test_surd_sql_refuses_every_write_alone_or_wrapped(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    leak = tmp_path / "leak.csv"
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and "locks" not in p.parts}
    q = REFUSED[form].format(root=copy, leak=leak, tmp=tmp_path)
    code, _, err = surd(capsys, "sql", q)
    assert code == 2 and len(err.strip().splitlines()) == 1, (q, err)
    assert "reads only" in err or "bad SQL" in err, (q, err)
    assert not leak.exists() and not list(tmp_path.glob("*.db")) and not (tmp_path / "exported").exists()
    after = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and "locks" not in p.parts}
    assert after == before, form
    assert surd(capsys, "release", "verify")[0] == 0


def test_surd_sql_reads_with_ctes_subqueries_and_explain(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for q in (
        "select count(*) from raw_items",
        "with a as (select * from release_latest) select count(*) from a",
        "select count(*) from (select sample_id from images where status = 'ok')",
        "explain select * from raw_items",
        "explain analyze select count(*) from captions",
        "from release_v0001 select sample_id limit 1",
    ):
        code, _, err = surd(capsys, "sql", q)
        assert code == 0, (q, err)
    rows = tmp_path / "rows.parquet"
    code, _, err = surd(
        capsys, "sql", "select sample_id from raw_items", "--format", "parquet", "--out", str(rows)
    )
    assert code == 0 and pq.read_table(rows).num_rows > 0, err


def test_request_bodies_are_capped(copy: Path) -> None:
    s = load_settings()
    engine = queue.connect(s.review_database_url)
    auth.add_steward(engine, "alice", "alice password")
    token = auth.new_token(engine, "alice")
    engine.dispose()
    body = b'{"n": 1, "pad": "' + b"x" * 30_000_000 + b'"}'
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with ThreadedServer(create_app(s), free_port()) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.post("/api/claim", content=body, headers=bearer).status_code == 413
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))  # no Content-Length
        r = c.post("/api/claim", content=chunks, headers=bearer)
        assert r.status_code == 413 and r.headers["X-Frame-Options"] == "DENY"
        assert c.post("/api/claim", json={"n": 1}, headers=bearer).status_code == 200


def test_a_takedown_target_is_capped_and_plain(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for value, says in (
        ("x" * 900_000, "at most 2048 characters"),
        ("civitai:bob\x00", "control or formatting"),
        ("civitai:\u202ebob", "control or formatting"),
    ):
        code, _, err = surd(capsys, "takedown", "add", "--creator", value, "--reason", "asked")
        assert code == 2 and says in err and len(err) < 400, err
    assert surd(capsys, "takedown", "list")[1].strip() == "no takedowns"


def test_judge_images_tell_no_side_by_order_or_time(tmp_path: Path) -> None:
    from PIL import Image

    from adapter.evaluate import _save_blind

    orders = []
    for k in range(16):
        stem = f"action-{k:02d}-s0"
        _save_blind(
            tmp_path, stem, Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), "red"), 1_700_000_000.0
        )
        a, b = (tmp_path / f"{stem}-{side}.png" for side in ("adapter", "baseline"))
        assert a.stat().st_mtime == b.stat().st_mtime == 1_700_000_000.0
        orders.append(a.stat().st_ino > b.stat().st_ino)  # which was made first
    assert 0 < sum(orders) < len(orders)  # the adapter's is first for some pairs, not all


@pytest.mark.parametrize(
    "make,code,says",
    [
        (lambda t: t, 2, "is not a file"),  # a folder given as --config
        (lambda t: _write(t / "c.toml", b"\x89PNG\r\n\x1a\n\x00\xff binary"), 2, "is not text"),
        (lambda t: _write(t / "c.toml", b"part_size = 100000000000000000000000000\n"), 2, "part_size"),
        (lambda t: _write(t / "c.toml", b"[images]\nsize = -3\n"), 2, "images.size"),
    ],
)
def test_every_config_error_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, code: int, says: str
) -> None:
    got, _, err = surd(capsys, "status", "--config", str(make(tmp_path)))
    assert got == code and says in err and len(err.strip().splitlines()) == 1, err
    assert "internal error" not in err and "Traceback" not in err


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_a_damaged_schema_marker_is_a_data_error(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (copy / "SCHEMA_VERSION").write_bytes(b"\xff\xfe not json")
    code, _, err = surd(capsys, "status")
    assert code == 3 and "SCHEMA_VERSION is damaged" in err and len(err.strip().splitlines()) == 1, err


def test_a_killed_writers_temp_part_is_removed_by_the_next_writer(copy: Path) -> None:
    from surd import pipeline

    s = load_settings()
    table = copy / "tables" / "nsfw_scores"
    stale = table / ".tmp-0123456789abcdef-part-00000000000000000001-deadbeef.parquet"
    stale.write_bytes(b"PAR1 half a part")  # what a SIGKILL between write and rename leaves
    assert pipeline.run(s, "nsfw_scores").processed == 0  # nothing to do, and the temp file is gone
    assert not stale.exists() and not list(table.glob(".tmp-*"))
