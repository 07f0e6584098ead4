"""The review web app over its real routes and database: auth, roles, CSRF, escaping, headers, API."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from surd import chain
from surd.app.web.app import create_app
from surd.config import load_settings
from surd.review import auth, outcome, queries, queue

XSS = "<script>alert('x')</script> a castle"


def _seed(settings) -> None:
    engine = queue.connect(settings.review_database_url)
    auth.add_steward(engine, "alice", "correct horse")
    auth.add_steward(engine, "root", "root password", "admin")
    queue.enqueue(
        engine,
        [
            {
                "sample_id": "s1",
                "simple_prompt": "a cat",
                "complex_prompt": XSS,
                "negative_prompt": "<img src=x onerror=alert(1)>",
                "p_simple": 0.7,
                "p_complex": 0.3,
                "source": "civitai",
                "source_url": "javascript:alert(1)",
            },
            {
                "sample_id": "s2",
                "simple_prompt": "a dog",
                "complex_prompt": "a dog, 8k",
                "p_simple": 0.6,
                "p_complex": 0.4,
                "source": "lexica",
                "source_url": "https://lexica.art/prompt/2",
            },
        ],
    )
    engine.dispose()


@pytest.fixture
def app(tmp_path: Path):
    settings = load_settings(data_root=tmp_path)
    _seed(settings)
    return create_app(settings)


def _client(app) -> TestClient:
    return TestClient(app, base_url="https://testserver")  # the session cookie is Secure


def login_post(c: TestClient, name: str, password: str, **kw):
    """The login form as a browser sends it: with the CSRF token of the page it came from."""
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    return c.post("/login", data={"name": name, "password": password, "csrf": token}, **kw)


def _login(c: TestClient, name: str, password: str) -> str:
    r = login_post(c, name, password)
    assert r.status_code == 200, r.text
    return re.search(r'name="csrf" value="([^"]+)"', c.get("/").text).group(1)


def test_every_route_refuses_anonymous_access(app) -> None:
    c = _client(app)
    checked = 0
    from surd.app.web import api, judge, web

    for route in [*web.router.routes, *judge.router.routes, *api.router.routes]:
        path = getattr(route, "path", "")
        if path in ("/login",) or path.startswith("/static"):
            continue
        url = re.sub(r"\{[^}]+\}", "s1", path)
        for method in getattr(route, "methods", set()) - {"HEAD"}:
            r = c.request(method, url, follow_redirects=False)
            if path.startswith("/api"):
                assert r.status_code == 401, (method, path)
            else:
                assert r.status_code in (303, 422) and (
                    r.status_code == 422 or r.headers["location"] == "/login"
                ), (method, path)
                if r.status_code == 422:  # form validation ran first: with the form, still refused
                    r = c.request(
                        method,
                        url,
                        data={
                            "csrf": "x",
                            "sample_id": "s1",
                            "decision": "accept",
                            "name": "n",
                            "password": "p",
                            "role": "admin",
                            "steward": "alice",
                            "pair_id": "p",
                            "pick": "left",
                            "kind": "sample",
                            "target": "s1",
                        },
                        follow_redirects=False,
                    )
                    assert r.status_code == 303 and r.headers["location"] == "/login", (method, path)
            checked += 1
    assert checked >= 14


def test_login_sets_a_secure_http_only_cookie_and_is_rate_limited(app) -> None:
    c = _client(app)
    assert login_post(c, "alice", "nope").status_code == 401
    r = login_post(c, "alice", "correct horse", follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert (
        r.status_code == 303 and "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    )
    codes = [login_post(c, "mallory", "guess").status_code for _ in range(5)]
    assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429]  # from the third miss, a wait
    assert c.post("/login", data={"name": "alice", "password": "correct horse"}).status_code == 403  # no CSRF


def test_review_page_escapes_untrusted_text_and_sends_safe_headers(app) -> None:
    c = _client(app)
    _login(c, "alice", "correct horse")
    r = c.get("/")
    page = r.text
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<img src=x" not in page and "&lt;img src=x" in page
    assert "javascript:alert" not in page and "no source link" in page  # a non-web URL is not linked
    assert r.headers["x-content-type-options"] == "nosniff"
    assert (
        "script-src 'self'" in r.headers["content-security-policy"]
        and "unsafe-inline" not in r.headers["content-security-policy"]
    )
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    assert '<link rel="preload" as="image" href="/image/s2">' in page  # the next image is prefetched


def test_csrf_is_required_on_every_state_changing_request(app) -> None:
    c = _client(app)
    csrf = _login(c, "root", "root password")
    forms = {
        "/decide": {"sample_id": "s1", "decision": "accept"},
        "/undo": {},
        "/filters": {"source": "lexica"},
        "/logout": {},
        "/admin/stewards": {"name": "eve", "password": "long enough", "role": "admin"},
        "/admin/tokens": {"name": "alice"},
        "/admin/leases/release": {"steward": "root"},
        "/admin/stewards/remove": {"name": "alice"},
        "/admin/tokens/revoke": {"name": "alice"},
        "/admin/takedowns": {"kind": "sample", "target": "s1", "reason": "asked"},
    }
    for path, data in forms.items():
        assert c.post(path, data={**data, "csrf": "forged"}).status_code == 403, path
        assert c.post(path, data=data).status_code == 422, path  # no token at all
    engine = queue.connect(app.state.settings.review_database_url)
    assert outcome.effective(engine) == {} and [s["name"] for s in auth.list_stewards(engine)] == [
        "alice",
        "root",
    ]
    r = c.post(
        "/decide", data={"csrf": csrf, "sample_id": "s1", "decision": "accept", "simple_prompt": "a grey cat"}
    )
    assert r.status_code == 200
    got = outcome.effective(engine)["s1"]
    assert got.pop("id") >= 1
    assert got == {
        "decision": "accept",
        "reason": None,
        "simple_prompt": "a grey cat",
        "actor": "root",
        "actor_kind": "human",
    }


def test_stewards_cannot_reach_admin_actions(app) -> None:
    c = _client(app)
    csrf = _login(c, "alice", "correct horse")
    assert c.get("/admin").status_code == 403
    assert c.get("/admin/export").status_code == 403
    for path in (
        "/admin/stewards",
        "/admin/tokens",
        "/admin/leases/release",
        "/admin/stewards/remove",
        "/admin/tokens/revoke",
        "/admin/takedowns",
    ):
        data = {"csrf": csrf, "name": "alice", "password": "long enough", "role": "admin", "steward": "x"}
        data |= {"kind": "sample", "target": "s1", "reason": "asked"}
        assert c.post(path, data=data).status_code == 403, path
    engine = queue.connect(app.state.settings.review_database_url)
    assert auth.check(engine, "alice", "long enough") is None  # no self-promotion


def test_admin_page_shows_leases_agreement_and_exports(app) -> None:
    c = _client(app)
    _login(c, "root", "root password")
    page = c.get("/admin").text
    assert "root" in page and "No audit item has two decisions yet" in page
    assert "<td>root</td><td>2</td>" in page  # root holds both items after opening the review page
    parquet = c.get("/admin/export?what=outcomes&format=parquet")
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"
    lines = c.get("/admin/export?what=outcomes&format=jsonl").text.splitlines()
    assert len(lines) == 2


def test_api_with_bearer_tokens_and_its_openapi_schema(app) -> None:
    engine = queue.connect(app.state.settings.review_database_url)
    alice = {"Authorization": f"Bearer {auth.new_token(engine, 'alice')}"}
    root = {"Authorization": f"Bearer {auth.new_token(engine, 'root')}"}
    c = _client(app)
    assert c.post("/api/claim", json={"n": 5}, headers={"Authorization": "Bearer nope"}).status_code == 401
    got = c.post("/api/claim", json={"n": 5, "source": "lexica"}, headers=alice).json()
    assert [i["sample_id"] for i in got["items"]] == ["s2"] and got["lease_seconds"] == 900
    assert (
        c.post(
            "/api/decide", json={"sample_id": "s2", "decision": "reject", "reason": "bogus"}, headers=alice
        ).status_code
        == 422
    )
    assert (
        c.post("/api/decide", json={"sample_id": "s2", "decision": "accept"}, headers=root).status_code == 409
    )
    r = c.post("/api/decide", json={"sample_id": "s2", "decision": "reject", "reason": "nsfw"}, headers=alice)
    assert r.status_code == 200 and r.json()["state"] == "final"
    assert c.post("/api/undo", headers=alice).json() == {"sample_id": "s2"}
    assert c.get("/api/progress", headers=alice).json()["remaining"] == 2
    assert c.get("/api/export", headers=alice).status_code == 403
    audit = c.get("/api/export?what=audit", headers=root).text.splitlines()
    assert len(audit) == 2 and '"undo"' in audit[1]
    schema = c.get("/api/openapi.json", headers=alice).json()
    assert {"/api/claim", "/api/decide", "/api/undo", "/api/export", "/api/progress"} <= set(schema["paths"])
    assert not any(p.startswith("/admin") or p == "/" for p in schema["paths"])


def test_images_are_served_with_their_real_type(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from storage.schemas import OK

    data = chain.PIPELINE.data_dir(tmp_path).open()
    settings = load_settings(data_root=tmp_path)
    _seed(settings)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "JPEG")
    table = data.table("images")
    row = {name: None for name in table.schema.names}
    row.update(sample_id="s1", status=OK, image=buf.getvalue())
    table.write([row])
    c = _client(create_app(settings))
    _login(c, "alice", "correct horse")
    r = c.get("/image/s1")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content == buf.getvalue()
    assert r.headers["x-content-type-options"] == "nosniff"
    assert c.get("/image/s2").status_code == 404


def test_stewards_judge_evaluation_pairs_blinded(app, tmp_path: Path) -> None:
    from PIL import Image

    run = tmp_path / "runs" / "v0001-tiny-L-1-s0" / "eval"
    (run / "images").mkdir(parents=True)
    pairs = []
    for i, (suite, side) in enumerate((("action", "left"), ("action", "right"), ("color", "left"))):
        for kind, colour in (("adapter", (200, 0, 0)), ("baseline", (0, 0, 200))):
            Image.new("RGB", (16, 16), colour).save(run / "images" / f"p{i}-{kind}.png")
        other = "right" if side == "left" else "left"
        pairs.append(
            {
                "pair_id": f"p{i}",
                "suite": suite,
                "prompt": f"prompt <b>{i}</b>",
                "origin": "ours",
                "seed": 0,
                side: f"images/p{i}-adapter.png",
                other: f"images/p{i}-baseline.png",
                "adapter_side": side,
                "clip_choice_adapter": 0.25 * (i + 1),
            }
        )
    (run / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    c = _client(app)
    csrf = _login(c, "alice", "correct horse")
    assert "v0001-tiny-L-1-s0" in c.get("/judge").text
    page = c.get("/judge/v0001-tiny-L-1-s0").text
    assert "adapter.png" not in page and "baseline.png" not in page and "&lt;b&gt;0&lt;/b&gt;" in page
    left = c.get("/judge/v0001-tiny-L-1-s0/image/p0/left")
    assert (
        left.headers["content-type"] == "image/png"
        and Image.open(io.BytesIO(left.content)).getpixel((0, 0))[0] > 150
    )
    assert c.get("/judge/../../etc/image/p0/left").status_code == 404
    assert c.get("/judge/v0001-tiny-L-1-s0/image/p0/up").status_code == 404
    assert (
        c.post("/judge/v0001-tiny-L-1-s0", data={"csrf": "bad", "pair_id": "p0", "pick": "left"}).status_code
        == 403
    )
    results = "/judge/v0001-tiny-L-1-s0/results"
    for pair_id, pick in (("p0", "left"), ("p1", "left"), ("p2", "tie")):  # adapter, baseline, tie
        assert c.get(results).status_code == 403  # no live counts to tell the sides by
        assert (
            c.post(
                "/judge/v0001-tiny-L-1-s0", data={"csrf": csrf, "pair_id": pair_id, "pick": pick}
            ).status_code
            == 200
        )
    done = c.get("/judge/v0001-tiny-L-1-s0").text
    assert (
        "<td>action</td><td>2</td><td>2</td><td>1</td><td>1</td><td>0</td><td>0.5</td><td>0.375</td>" in done
    )
    assert "<td>color</td><td>1</td><td>1</td><td>0</td><td>0</td><td>1</td><td>n/a</td><td>0.75</td>" in done
    assert c.get(results).status_code == 200
    changed = c.post("/judge/v0001-tiny-L-1-s0", data={"csrf": csrf, "pair_id": "p0", "pick": "right"})
    assert changed.status_code == 409  # seen the results: the picks are final


def test_a_question_pair_takes_answers_only_and_an_ab_pair_picks_only(app, tmp_path: Path) -> None:
    from PIL import Image

    run = tmp_path / "runs" / "r1" / "eval"
    (run / "images").mkdir(parents=True)
    pairs = []
    for i, question in enumerate(("Does the image show exactly four pies?", None)):
        for kind in ("adapter", "baseline"):
            Image.new("RGB", (8, 8)).save(run / "images" / f"q{i}-{kind}.png")
        pairs.append(
            {"pair_id": f"q{i}", "suite": "counting", "prompt": f"prompt {i}", "origin": "paper", "seed": 0,
             "left": f"images/q{i}-adapter.png", "right": f"images/q{i}-baseline.png", "adapter_side": "left",
             "clip_choice_adapter": 0.5, "question": question}
        )  # fmt: skip
    (run / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    c = _client(app)
    csrf = _login(c, "alice", "correct horse")
    assert "Does the image show exactly four pies?" in c.get("/judge/r1").text
    refused = [
        c.post("/judge/r1", data={"csrf": csrf, "pair_id": "q0", "pick": "left"}),  # a pick for a question
        c.post(
            "/judge/r1/answer", data={"csrf": csrf, "pair_id": "q1", "left": "yes"}
        ),  # an answer for a pick
        c.post("/judge/r1/answer", data={"csrf": csrf, "pair_id": "q0", "left": "maybe"}),
    ]
    assert [r.status_code for r in refused] == [422, 422, 422]
    assert c.post("/judge/r1/answer", data={"csrf": "bad", "pair_id": "q0", "left": "yes"}).status_code == 403
    ok = c.post("/judge/r1/answer", data={"csrf": csrf, "pair_id": "q0", "left": "yes", "right": "no"})
    assert ok.status_code == 200 and "prompt 1" in ok.text  # on to the next pair
    from surd.review import judgments as judge

    engine = queue.connect(app.state.settings.review_database_url)
    assert judge.accuracy(engine, "r1", pairs) == {
        "prompt 0": {"adapter": 100.0, "baseline": 0.0, "images": 1}
    }


def test_an_admin_revokes_tokens_and_removes_a_steward_whose_decisions_stay(app) -> None:
    engine = queue.connect(app.state.settings.review_database_url)
    token = {"Authorization": f"Bearer {auth.new_token(engine, 'alice')}"}
    c = _client(app)
    browser = _client(app)
    _login(browser, "alice", "correct horse")
    got = c.post("/api/claim", json={"n": 1}, headers=token).json()["items"]
    assert (
        c.post(
            "/api/decide", json={"sample_id": got[0]["sample_id"], "decision": "accept"}, headers=token
        ).status_code
        == 200
    )
    admin = _client(app)
    csrf = _login(admin, "root", "root password")
    page = admin.post("/admin/tokens/revoke", data={"csrf": csrf, "name": "alice"}).text
    assert "1 API token(s) of alice revoked" in page
    assert c.post("/api/claim", json={"n": 1}, headers=token).status_code == 401
    assert (
        "cannot remove your own"
        in admin.post("/admin/stewards/remove", data={"csrf": csrf, "name": "root"}).text
    )
    assert "alice removed" in admin.post("/admin/stewards/remove", data={"csrf": csrf, "name": "alice"}).text
    assert login_post(c, "alice", "correct horse").status_code == 401
    r = browser.get("/", follow_redirects=False)  # her open session ends with the account
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert [d["actor"] for d in queries.export_rows(engine, "audit")] == [
        "alice"
    ]  # the log keeps her decision


def test_an_admin_takes_down_a_sample_recorded_and_rejected_in_the_queue(app) -> None:
    admin = _client(app)
    csrf = _login(admin, "root", "root password")
    bad = admin.post("/admin/takedowns", data={"csrf": csrf, "kind": "creator", "target": "x", "reason": "r"})
    assert bad.status_code == 422 and "--creator takes SOURCE:NAME" in bad.text
    form = {"csrf": csrf, "kind": "sample", "target": "s1", "reason": XSS, "requested_by": "a lawyer"}
    page = admin.post("/admin/takedowns", data=form).text
    assert "Takedown 1 recorded; 1 queued item(s) rejected." in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page  # the reason shown as text
    assert "steward:root" in page and "a lawyer" in page
    engine = queue.connect(app.state.settings.review_database_url)
    got = outcome.effective(engine)["s1"]
    assert (got["decision"], got["reason"], got["actor"]) == ("reject", "takedown", "takedown:1")
    # a steward cannot take it back: the takedown settles the item over every decision
    alice = _client(app)
    alice_csrf = _login(alice, "alice", "correct horse")
    alice.post("/decide", data={"csrf": alice_csrf, "sample_id": "s1", "decision": "accept"})
    assert outcome.effective(engine)["s1"]["decision"] == "reject"
