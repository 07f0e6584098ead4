"""Bad states are errors with a way out: a busy review database, a read-only or missing data root,
a damaged table part, SQL that would write, an oversized request body, a hostile takedown target,
judge images that could unblind a judge."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from surd.app.cli import main
from surd.review import auth, queue
from surd.review.app import create_app
from surd.settings import load_settings
from tests.conftest import free_port, released_root
from tests.serve import ThreadedServer


def surd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    got = capsys.readouterr()
    return int(done.value.code or 0), got.out, got.err


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, replay: Any) -> Path:
    return released_root(tmp_path_factory.mktemp("bad"), replay)


@pytest.fixture
def copy(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    c = tmp_path / "data"
    shutil.copytree(root, c)
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


def test_surd_sql_runs_reads_only(copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "leak.csv"
    for q in (
        f"copy (select * from raw_items) to '{target}'",
        "attach 'x.db'",
        "install httpfs",
        "load httpfs",
    ):
        code, _, err = surd(capsys, "sql", q)
        assert code == 2 and "reads only" in err and len(err.strip().splitlines()) == 1, (q, err)
    assert not target.exists()
    assert surd(capsys, "sql", "select count(*) from raw_items")[0] == 0


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
