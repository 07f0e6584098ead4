"""The review at volume, over the real routes and database: grid pages as one transaction, a real
skip, search and sort, guidelines and their versions, comments and flags, the admins' bulk actions,
agreement per guideline version, readable error pages, a session cookie that stays small."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from surd.app.web.app import create_app
from surd.config import load_settings
from surd.review import auth, bulk, comments, guidelines, outcome, queries, queue
from surd.review.filters import Filters
from surd.review.schema import decisions
from tests.surd.review.test_app import login_post


def _item(i: int, **extra) -> dict:
    return {
        "sample_id": f"s{i}",
        "simple_prompt": f"a photo of thing {i}",
        "complex_prompt": f"thing {i}, 8k",
        "p_simple": 0.5 + i / 100,
        "p_complex": 0.5 - i / 100,
        "source": "civitai" if i % 2 else "lexica",
        "source_url": f"https://example.org/zzz/{i}",
        **extra,
    }


@pytest.fixture
def engine(tmp_path: Path):
    e = queue.connect(f"sqlite:///{tmp_path / 'review.db'}")
    queue.enqueue(e, [_item(i) for i in range(1, 7)])
    queue.enqueue(e, [_item(7)], audit_share=1.0)
    yield e
    e.dispose()


def _log(e: sa.Engine) -> list[dict]:
    with e.connect() as c:
        return [dict(r) for r in c.execute(sa.select(decisions).order_by(decisions.c.id)).mappings()]


def _page(*pairs: tuple[str, str | None]) -> list[dict]:
    return [
        {"sample_id": sid, "decision": "reject" if r else "accept", "reason": r, "view": "grid"}
        for sid, r in pairs
    ]


def test_a_grid_page_is_recorded_whole_or_not_at_all(engine) -> None:
    held = queue.claim(engine, "alice", 24, 900, Filters(single_only=True))
    assert [h["sample_id"] for h in held] == [f"s{i}" for i in range(1, 7)]  # s7, the audit item, not
    assert queue.claim(engine, "bob", 24, 900)[0]["sample_id"] == "s7"
    with pytest.raises(queue.QueueError, match="not yours to decide in bulk"):
        queue.decide_page(engine, "alice", _page(("s1", None), ("s7", None)))  # an audit item
    with pytest.raises(ValueError, match="needs a reason"):
        queue.decide_page(engine, "alice", [*_page(("s1", None)), {"sample_id": "s2", "decision": "reject"}])
    assert _log(engine) == []  # neither page left a row
    assert queue.decide_page(engine, "alice", _page(("s1", None), ("s2", "nsfw"), ("s3", None))) == 3
    rows = _log(engine)
    assert [(r["sample_id"], r["decision"], r["reason"], r["view"]) for r in rows] == [
        ("s1", "accept", None, "grid"),
        ("s2", "reject", "nsfw", "grid"),
        ("s3", "accept", None, "grid"),
    ]
    assert queries.item(engine, "s2")["state"] == "final"


def test_a_skip_ends_the_lease_at_once(engine) -> None:
    assert queue.claim(engine, "alice", 1, 900)[0]["sample_id"] == "s1"
    assert queue.claim(engine, "bob", 1, 900)[0]["sample_id"] == "s2"
    assert queue.skip(engine, "alice", "s1") is True
    assert queue.skip(engine, "alice", "s2") is False  # bob's: not alice's to give up
    assert queue.claim(engine, "carol", 1, 900)[0]["sample_id"] == "s1"
    assert queue.claim(engine, "alice", 1, 900, Filters(exclude=("s1",)))[0]["sample_id"] == "s3"


def test_search_reads_the_prompts_only_in_any_case_and_sort_orders(tmp_path: Path) -> None:
    e = queue.connect(f"sqlite:///{tmp_path / 'r.db'}")
    queue.enqueue(
        e,
        [
            _item(1, complex_prompt="Café at night, 100% detail"),
            _item(2, simple_prompt="a CAFÉ sign"),
            _item(3, complex_prompt="a_b c"),
            _item(4),
        ],
    )

    def found(f: Filters) -> list[str]:
        try:
            return [h["sample_id"] for h in queue.claim(e, "t", 100, 900, f)]
        finally:
            queue.release_leases(e, steward="t")

    assert found(Filters(text="café")) == ["s1", "s2"]
    assert found(Filters(text="zzz")) == []  # the source URL is not a prompt
    assert found(Filters(text="100%")) == ["s1"] and found(Filters(text="%")) == ["s1"]
    assert found(Filters(text="a_b")) == ["s3"] and found(Filters(text="_")) == ["s3"]
    assert found(Filters(sort="-margin")) == ["s4", "s3", "s2", "s1"]
    assert found(Filters(source="lexica", sort="margin")) == ["s2", "s4"]
    with pytest.raises(ValueError, match="sort by one of"):
        found(Filters(sort="payload"))
    e.dispose()


def test_guidelines_carry_a_version_and_never_inject_markup(tmp_path: Path) -> None:
    rules = tmp_path / "g.md"
    rules.write_text("---\nversion: 4\n---\n# Rules\n\nAccept <script>x()</script> **this**.\n")
    g = guidelines.load(rules)
    assert g.version == "4" and g.markdown.startswith("# Rules")
    assert "<strong>this</strong>" in g.html and "<script>" not in g.html
    rules.write_text("# Rules, no version\n")
    g2 = guidelines.load(rules)  # re-read when the file changes
    assert re.fullmatch(r"sha-[0-9a-f]{12}", g2.version) and "no version" in g2.markdown
    assert guidelines.load(None) is None
    with pytest.raises(FileNotFoundError):
        guidelines.load(tmp_path / "missing.md")


def test_comments_are_checked_kept_and_exported(engine) -> None:
    for bad, why in [
        ("", "needs some text"),
        ("x" * 2001, "at most 2000"),
        ("a\u202eb", "control or formatting"),
    ]:
        with pytest.raises(ValueError, match=why):
            comments.add(engine, "s1", "alice", bad)
    with pytest.raises(ValueError, match="no item"):
        comments.add(engine, "nope", "alice", "hello")
    comments.add(engine, "s1", "alice", "the caption is wrong")
    comments.add(engine, "s1", "bob", "", flag=True)  # a flag alone says enough
    assert [c["author"] for c in comments.of(engine, ["s1", "s2"])["s1"]] == ["alice", "bob"]
    assert [c["author"] for c in comments.page(engine, flags=True)["rows"]] == ["bob"]
    rows = {r["sample_id"]: r for r in queries.export_rows(engine, "outcomes")}
    assert rows["s1"]["comments"] == "alice: the caption is wrong\nbob: [flag] "
    assert rows["s2"]["comments"] is None


def test_bulk_release_reassign_and_reopen_are_logged(engine) -> None:
    queue.claim(engine, "alice", 3, 900)  # s1 s2 s3
    queue.claim(engine, "bob", 2, 900)  # s4 s5
    assert bulk.apply(engine, "admin:root", "release", Filters(source="civitai"), held_by="alice") == 2
    assert {h["sample_id"] for h in queue.claim(engine, "carol", 2, 900)} == {"s1", "s3"}
    assert bulk.apply(engine, "admin:root", "reassign", Filters(), held_by="bob", to="alice") == 2
    held = queue.claim(engine, "alice", 10, 900)
    assert {"s2", "s4", "s5"} <= {h["sample_id"] for h in held}
    queue.decide(engine, "s2", "alice", "reject", reason="nsfw")
    queue.decide(engine, "s4", "alice", "accept")
    assert bulk.apply(engine, "admin:root", "reopen", Filters(source="lexica")) == 2
    assert queries.item(engine, "s2")["state"] == "open" and "s2" not in outcome.effective(engine)
    assert [r["decision"] for r in _log(engine)] == ["reject", "accept", "reopen", "reopen"]  # kept
    queue.claim(engine, "dave", 10, 900)
    queue.decide(engine, "s2", "dave", "accept")  # open again, for anyone
    assert outcome.effective(engine)["s2"]["actor"] == "dave"
    log = bulk.log(engine)
    assert [(a["action"], a["items"]) for a in log] == [("reopen", 2), ("reassign", 2), ("release", 2)]
    assert json.loads(log[0]["selection"]) == {"source": "lexica"}
    assert json.loads(log[1]["selection"]) == {"held_by": "bob", "to": "alice"}
    with pytest.raises(ValueError, match="one of release"):
        bulk.apply(engine, "admin:root", "delete", Filters())
    with pytest.raises(ValueError, match="reassign needs"):
        bulk.apply(engine, "admin:root", "reassign", Filters())


def test_agreement_per_guideline_version(engine) -> None:
    e = engine
    queue.enqueue(e, [_item(i) for i in range(8, 12)], audit_share=1.0)
    plan = [
        ("s8", "v1", "accept", "accept"),
        ("s9", "v1", "accept", "reject"),
        ("s10", "v2", "reject", "reject"),
    ]
    for sid, version, a, b in plan:
        for who, d in (("alice", a), ("bob", b)):
            queue.claim(e, who, 20, 900)
            queue.decide(e, sid, who, d, reason="nsfw" if d == "reject" else None, guideline_version=version)
            queue.release_leases(e, steward=who)
    queue.claim(e, "alice", 20, 900)
    queue.decide(e, "s11", "alice", "accept", guideline_version="v1")
    queue.claim(e, "bob", 20, 900)
    queue.decide(e, "s11", "bob", "accept", guideline_version="v2")
    got = queries.agreement_by_version(e)
    assert set(got) == {"v1", "v2", "mixed"}
    assert got["v1"]["audit_items_compared"] == 2 and got["v1"]["agreement"] == 0.5
    assert got["v2"] == {"audit_items_compared": 1, "agreement": 1.0, "cohen_kappa": 1.0}
    assert got["mixed"]["audit_items_compared"] == 1


@pytest.fixture
def app(tmp_path: Path):
    rules = tmp_path / "guidelines.md"
    rules.write_text("---\nversion: 7\n---\nAccept what the caption says.\n")
    settings = load_settings(data_root=tmp_path)
    settings = settings.model_copy(
        update={"review": settings.review.model_copy(update={"guidelines": rules})}
    )
    e = queue.connect(settings.review_database_url)
    auth.add_steward(e, "alice", "correct horse")
    auth.add_steward(e, "root", "root password", "admin")
    queue.enqueue(e, [_item(i) for i in range(1, 30)])
    e.dispose()
    return create_app(settings)


def _signed_in(app, name: str, password: str) -> tuple[TestClient, str]:
    c = TestClient(app, base_url="https://testserver")
    assert login_post(c, name, password).status_code == 200
    return c, re.search(r'name="csrf" value="([^"]+)"', c.get("/").text).group(1)


def test_the_grid_route_takes_a_page_and_refuses_a_bad_one_readably(app) -> None:
    c, csrf = _signed_in(app, "alice", "correct horse")
    page = c.get("/grid").text
    ids = re.findall(r'name="sample_id" value="([^"]+)"', page)
    assert len(ids) == 24 and 'id="guideline-version">7<' in page
    bad = c.post("/grid/decide", data={"csrf": csrf, "sample_id": ids[:2], "verdict": ["accept", "bogus"]})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    assert "a verdict is accept or one of the reasons" in bad.text and "{" not in bad.text.split("<main")[1]
    verdicts = ["accept"] * 24
    verdicts[5] = "nsfw"
    r = c.post("/grid/decide", data={"csrf": csrf, "sample_id": ids, "verdict": verdicts})
    assert r.status_code == 200  # followed to the next page
    e = app.state.engine
    log = _log(e)
    assert len(log) == 24 and {(r["view"], r["guideline_version"]) for r in log} == {("grid", "7")}
    assert [r["sample_id"] for r in log if r["decision"] == "reject"] == [ids[5]]
    again = c.post("/grid/decide", data={"csrf": csrf, "sample_id": ids[:1], "verdict": ["accept"]})
    assert again.status_code == 409 and "nothing on this page was recorded" in again.text


def test_web_errors_are_pages_and_api_errors_json(app) -> None:
    c, csrf = _signed_in(app, "alice", "correct horse")
    r = c.post("/filters", data={"csrf": csrf, "margin_min": "lots"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "must be a number" in r.text and 'id="error"' in r.text
    r = c.post("/filters", data={"csrf": csrf, "sort": "payload"})
    assert r.status_code == 422 and "sort by one of" in r.text
    r = c.post("/decide", data={"csrf": csrf})  # fields missing: FastAPI's validation, as a page
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "sample_id" in r.text and 'id="error"' in r.text
    assert c.get("/item/nope").status_code == 404 and 'id="error"' in c.get("/item/nope").text
    token = {"Authorization": f"Bearer {auth.new_token(app.state.engine, 'alice')}"}
    r = c.post("/api/claim", json={"n": 5, "sort": "payload"}, headers=token)
    assert r.status_code == 422 and "sort by one of" in r.json()["detail"]


def test_the_api_has_guidelines_skip_comment_search_and_records_its_view(app) -> None:
    c = TestClient(app, base_url="https://testserver")
    token = {"Authorization": f"Bearer {auth.new_token(app.state.engine, 'alice')}"}
    assert c.get("/api/guidelines", headers=token).json() == {
        "version": "7",
        "markdown": "Accept what the caption says.\n",
    }
    got = c.post("/api/claim", json={"n": 5, "text": "THING 2", "sort": "-margin"}, headers=token).json()
    assert [i["sample_id"] for i in got["items"]] == ["s29", "s28", "s27", "s26", "s25"]  # thing 2x, 2
    assert c.post("/api/skip", json={"sample_id": "s29"}, headers=token).json() == {"released": True}
    assert c.post("/api/comment", json={"sample_id": "s28", "text": "odd"}, headers=token).status_code == 200
    assert c.post("/api/comment", json={"sample_id": "s28", "text": ""}, headers=token).status_code == 422
    assert (
        c.post("/api/decide", json={"sample_id": "s28", "decision": "accept"}, headers=token).status_code
        == 200
    )
    (row,) = _log(app.state.engine)
    assert (row["sample_id"], row["view"], row["guideline_version"]) == ("s28", "api", "7")


def test_admin_bulk_route_is_for_admins_and_logged(app) -> None:
    alice, csrf_a = _signed_in(app, "alice", "correct horse")  # alice holds a claim batch
    form = {"action": "release", "held_by": "alice"}
    assert alice.post("/admin/bulk", data={"csrf": csrf_a, **form}).status_code == 403
    root, csrf = _signed_in(app, "root", "root password")
    page = root.post("/admin/bulk", data={"csrf": csrf, **form, "margin_min": "x"})
    assert page.status_code == 422 and "must be numbers" in page.text
    page = root.post("/admin/bulk", data={"csrf": csrf, "action": "reassign", "to": "ghost"})
    assert page.status_code == 422 and "No steward ghost" in page.text
    page = root.post("/admin/bulk", data={"csrf": csrf, **form})
    assert page.status_code == 200 and "release: 10 item(s)." in page.text
    assert re.search(
        r"<td>admin:root</td><td>release</td><td><code>.*held_by.*alice.*</code></td><td>10</td>", page.text
    )


def test_the_session_cookie_stays_under_a_browsers_limit(app) -> None:
    """Skipped and revealed items live in the signed cookie: however many a steward skips and
    reveals, it stays under the 4096 bytes browsers keep."""
    c, csrf = _signed_in(app, "alice", "correct horse")
    c.post("/filters", data={"csrf": csrf, "text": "x" * 200, "margin_min": "-1", "sort": "-margin"})
    for i in range(1, 30):
        c.post("/reveal", data={"csrf": csrf, "sample_id": f"s{i}"})
        c.post("/skip", data={"csrf": csrf, "sample_id": f"s{i}"})
    for i in range(200):
        c.post("/reveal", data={"csrf": csrf, "sample_id": f"{i:016x}"})
        r = c.post("/skip", data={"csrf": csrf, "sample_id": f"{i:016x}"}, follow_redirects=False)
    cookie = r.headers["set-cookie"].split(";")[0]
    assert len(cookie) < 3500, len(cookie)  # room to spare
    assert c.get("/").status_code == 200  # and the session still works


def test_every_response_says_its_server_time_and_its_id(app) -> None:
    c = TestClient(app, base_url="https://testserver")
    a, b = c.get("/login"), c.get("/static/review.css")
    assert re.fullmatch(r"app;dur=\d+\.\d", a.headers["server-timing"])
    assert (
        re.fullmatch(r"[0-9a-f]{16}", a.headers["x-request-id"])
        and a.headers["x-request-id"] != b.headers["x-request-id"]
    )
    assert a.headers["cache-control"] == "no-store" and b.headers["cache-control"] == "public, max-age=600"
