"""Work that can be trusted (issue 40), the parts on main: a cap on what one steward holds, names
no account can take, and a log of every reveal."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from surd.app.web.app import create_app
from surd.config import load_settings
from surd.review import auth, queue
from surd.review.schema import items


def _rows(n: int) -> list[dict]:
    return [
        {
            "sample_id": f"s{i:03d}",
            "simple_prompt": f"thing {i}",
            "p_simple": 0.7,
            "p_complex": 0.3,
            "source": "civitai" if i % 2 else "lexica",
        }
        for i in range(n)
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def engine(request, tmp_path: Path):
    url = (
        f"sqlite:///{tmp_path / 'q.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres").new_database()
    )
    e = queue.connect(url)
    queue.enqueue(e, _rows(60))
    yield e
    e.dispose()


def _held_by(engine, steward: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).where(items.c.lease_owner == steward)).scalar_one()
        )


def test_claims_with_any_filters_never_lease_one_steward_more_than_the_cap(engine) -> None:
    got = queue.claim(engine, "alice", 200, 900, max_held=12)
    assert len(got) == 12 == _held_by(engine, "alice")
    # another filter, another claim: only what is held already (reloads still show it), nothing new
    lexica = queue.claim(engine, "alice", 50, 900, queue.Filters(source="lexica"), max_held=12)
    assert {i["sample_id"] for i in lexica} <= {i["sample_id"] for i in got}
    assert _held_by(engine, "alice") == 12
    # deciding frees room: the next claim fills up to the cap again, never past it
    for item in got[:5]:
        queue.decide(engine, item["sample_id"], "alice", "accept")
    again = queue.claim(engine, "alice", 200, 900, max_held=12)
    assert len(again) == 12 and _held_by(engine, "alice") == 12 + 0  # decided items are not open
    # other stewards are not held back by alice's cap
    assert len(queue.claim(engine, "bob", 200, 900, max_held=40)) == 40


def test_claims_of_one_steward_at_once_stay_under_the_cap(engine) -> None:
    """Eight claims of one steward at the same moment (tabs, scripts), with different filters: the
    cap holds across them (PostgreSQL: a transaction lock per name; SQLite: serial writes)."""
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def one(k: int) -> None:
        try:
            start.wait()
            f = queue.Filters(source=("civitai", "lexica", None)[k % 3])
            queue.claim(engine, "alice", 7, 900, f, max_held=10)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _held_by(engine, "alice") == 10


def _app(tmp_path: Path, **review):
    settings = load_settings(data_root=tmp_path, review={"max_held": 5, **review})
    engine = queue.connect(settings.review_database_url)
    auth.add_steward(engine, "root", "root password", "admin")
    auth.add_steward(engine, "alice", "correct horse")
    queue.enqueue(engine, _rows(30))
    token = auth.new_token(engine, "alice")
    root = auth.new_token(engine, "root")
    engine.dispose()
    return create_app(settings), {"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {root}"}


def _login(c: TestClient, name: str, password: str) -> str:
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    assert c.post("/login", data={"name": name, "password": password, "csrf": csrf}).status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', c.get("/").text).group(1)


def test_the_api_claim_gets_what_is_left_under_the_cap(tmp_path: Path) -> None:
    app, alice, _ = _app(tmp_path)
    c = TestClient(app, base_url="https://testserver")
    first = c.post("/api/claim", json={"n": 200}, headers=alice).json()["items"]
    assert len(first) == 5
    more = c.post("/api/claim", json={"n": 200, "source": "civitai"}, headers=alice).json()["items"]
    assert {i["sample_id"] for i in more} <= {i["sample_id"] for i in first}
    # the review page (10 a claim) and the grid (24 a page) count against the same cap
    csrf = _login(c, "alice", "correct horse")
    assert csrf and c.get("/grid").status_code == 200
    engine = queue.connect(app.state.settings.review_database_url)
    assert _held_by(engine, "alice") == 5
    engine.dispose()


RESERVED = ["policy:x", "stage:captions", "takedown:7", "cli:root", "admin:root", "adjudicated:x", "a:b"]


def test_no_account_takes_a_name_of_the_pipelines_own_actors(tmp_path: Path) -> None:
    app, _, _ = _app(tmp_path)
    engine = queue.connect(app.state.settings.review_database_url)
    c = TestClient(app, base_url="https://testserver")
    csrf = _login(c, "root", "root password")
    for name in RESERVED:
        for bad in (name, f" {name}", "bob "):  # the library refuses untrimmed names too
            with pytest.raises(ValueError, match="steward name"):
                auth.add_steward(engine, bad, "long enough password")
        form = {"csrf": csrf, "name": name, "password": "long enough password", "role": "steward"}
        r = c.post("/admin/stewards", data=form)
        assert r.status_code == 422 and "steward name" in r.text, name
    with engine.connect() as conn:
        names = set(conn.execute(sa.text("select name from stewards")).scalars())
    assert names == {"root", "alice"}
    engine.dispose()


def test_every_reveal_and_hide_is_logged_and_exported(tmp_path: Path) -> None:
    app, _, root = _app(tmp_path)
    c = TestClient(app, base_url="https://testserver")
    csrf = _login(c, "alice", "correct horse")
    for sid, hide in (("s001", ""), ("s002", ""), ("s001", "1")):
        assert c.post("/reveal", data={"csrf": csrf, "sample_id": sid, "hide": hide}).status_code == 204
    lines = [json.loads(x) for x in c.get("/api/export?what=reveals", headers=root).text.splitlines()]
    assert [(r["steward"], r["sample_id"], r["action"]) for r in lines] == [
        ("alice", "s001", "reveal"),
        ("alice", "s002", "reveal"),
        ("alice", "s001", "hide"),
    ]
    assert all(r["created_at"].endswith("+00:00") for r in lines)
    parquet = TestClient(app, base_url="https://testserver")
    _login(parquet, "root", "root password")
    got = parquet.get("/admin/export?what=reveals&format=parquet")
    assert got.status_code == 200 and got.content[:4] == b"PAR1"


def test_an_auto_policy_never_decides_what_a_person_reopened_or_undid(engine) -> None:
    from surd.review import bulk, policies, queries

    decided = policies.auto_review(engine, "demo-margin-v1", -0.5)
    assert decided == 60  # every item's margin is 0.4: accepted by the policy
    assert bulk.apply(engine, "admin:root", "reopen", queue.Filters(source="lexica")) == 30
    [held] = queue.claim(engine, "alice", 1, 900, queue.Filters(source="lexica"))
    queue.decide(engine, held["sample_id"], "alice", "reject", reason="nsfw")
    assert queue.undo(engine, "alice") == held["sample_id"]
    assert policies.auto_review(engine, "demo-margin-v1", -0.5) == 0  # the next enqueue's pass
    lexica = [i for i in _rows(60) if i["source"] == "lexica"]
    assert all(queries.item(engine, i["sample_id"])["state"] == "open" for i in lexica)


def test_comments_are_capped_per_item_and_per_steward_a_minute(tmp_path: Path) -> None:
    app, alice, _ = _app(tmp_path, comments_per_item=4, comments_per_minute=3)
    c = TestClient(app, base_url="https://testserver")
    sent = [
        c.post("/api/comment", json={"sample_id": "s001", "text": f"note {k}"}, headers=alice)
        for k in range(4)
    ]
    assert [r.status_code for r in sent] == [200, 200, 200, 429]
    assert "a minute" in sent[3].json()["detail"]
    engine = queue.connect(app.state.settings.review_database_url)
    auth.add_steward(engine, "bob", "bob password")
    bob = {"Authorization": f"Bearer {auth.new_token(engine, 'bob')}"}
    assert c.post("/api/comment", json={"sample_id": "s001", "text": "mine"}, headers=bob).status_code == 200
    full = c.post("/api/comment", json={"sample_id": "s001", "text": "one more", "flag": True}, headers=bob)
    assert full.status_code == 429 and "comments already" in full.json()["detail"]
    assert (
        c.post("/api/comment", json={"sample_id": "s002", "text": "elsewhere"}, headers=bob).status_code
        == 200
    )
    from surd.review import comments

    assert len(comments.of(engine, ["s001"])["s001"]) == 4  # what was refused was not stored
    engine.dispose()


def test_the_admin_page_never_pushes_a_flag_off(tmp_path: Path) -> None:
    from surd.review import comments

    app, _, _ = _app(tmp_path)
    engine = queue.connect(app.state.settings.review_database_url)
    comments.add(engine, "s001", "alice", "look at this one", flag=True)
    for k in range(150):  # what used to push every flag off a page of the latest 100
        comments.add(engine, f"s{k % 30:03d}", "alice", f"comment {k}")
    engine.dispose()
    c = TestClient(app, base_url="https://testserver")
    _login(c, "root", "root password")
    page = c.get("/admin").text
    assert "look at this one" in page and page.count("comment 1") < 60  # the flag, and a page of comments
    older = re.search(r'id="older-comments" href="([^"]+)"', page).group(1)
    back = c.get(older.replace("&amp;", "&")).text
    assert "comment 99" in back and "comment 149" not in back
    last = re.search(r'id="older-comments" href="([^"]+)"', back).group(1)
    assert "comment 0<" in c.get(last).text and 'id="older-flags"' not in page


def test_each_stewards_pace_by_view_on_the_admin_page_and_the_api(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from surd.review.schema import decisions

    app, _, root = _app(tmp_path)
    engine = queue.connect(app.state.settings.review_database_url)
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    rows = []
    for k, (at, view) in enumerate([(0, "single"), (10, "single"), (20, "single"), (50, "single")]):
        rows.append(("alice", f"s{k:03d}", at, view))
    rows += [("alice", f"s{4 + k:03d}", 100, "grid") for k in range(24)]  # one page: one timestamp
    rows += [("alice", f"s{28 + k:03d}", 2100, "grid") for k in range(2)]  # after a 33-minute pause
    rows += [("bob", "s000", 5, "api")]
    with engine.begin() as conn:
        conn.execute(
            decisions.insert(),
            [
                {
                    "sample_id": sid,
                    "actor": who,
                    "actor_kind": "human",
                    "decision": "accept",
                    "created_at": t0 + timedelta(seconds=at),
                    "view": view,
                }
                for who, sid, at, view in rows
            ]
            + [
                {
                    "sample_id": "s001",
                    "actor": "policy:p",
                    "actor_kind": "auto",
                    "decision": "accept",
                    "created_at": t0,
                    "view": None,
                }
            ],
        )
    engine.dispose()
    c = TestClient(app, base_url="https://testserver")
    got = {(r["steward"], r["view"]): r for r in c.get("/api/throughput", headers=root).json()}
    assert set(got) == {("alice", "single"), ("alice", "grid"), ("bob", "api")}  # no policy
    single = got[("alice", "single")]
    assert (single["decisions"], single["timed"]) == (4, 3)  # the first has no gap before it
    assert (single["median_s"], single["p90_s"], single["per_hour"]) == (10.0, 30.0, 216.0)
    grid = got[("alice", "grid")]
    assert (grid["decisions"], grid["timed"]) == (26, 24)  # the page after the pause is untimed
    assert grid["median_s"] == round(50 / 24, 2) and grid["per_hour"] == round(24 * 3600 / 50, 1)
    assert got[("bob", "api")]["timed"] == 0 and got[("bob", "api")]["per_hour"] is None
    _login(c, "root", "root password")
    page = c.get("/admin").text
    assert '<table id="pace">' in page and "<td>alice</td><td>grid</td><td>26</td><td>1728.0</td>" in page


def test_an_audit_items_second_decider_sees_nothing_of_the_first(tmp_path: Path) -> None:
    app, _, _ = _app(tmp_path)
    engine = queue.connect(app.state.settings.review_database_url)
    queue.enqueue(
        engine, [{**_rows(1)[0], "sample_id": "a001", "simple_prompt": "an audit item"}], audit_share=1.0
    )
    auth.add_steward(engine, "bob", "bob password")
    from surd.review import comments

    [held] = queue.claim(engine, "bob", 1, 900, queue.Filters(text="an audit item"))
    comments.add(engine, "a001", "bob", "bob thinks the caption is fine", flag=True)
    queue.decide(engine, held["sample_id"], "bob", "accept")
    assert queue.claim(engine, "alice", 1, 900, queue.Filters(text="an audit item"))  # alice's turn
    engine.dispose()
    c = TestClient(app, base_url="https://testserver")
    _login(c, "alice", "correct horse")
    page = c.get("/?at=a001").text
    assert "an audit item" in page  # alice holds it, and sees it
    assert "bob" not in page and "caption is fine" not in page  # blind: no note, no name
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert c.post("/decide", data={"csrf": csrf, "sample_id": "a001", "decision": "accept"}).status_code in (
        200,
        303,
    )
    after = c.get("/item/a001").text
    assert "bob thinks the caption is fine" in after  # once she has decided, the discussion is hers too
