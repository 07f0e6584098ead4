"""The review web app over its real routes and database: auth, CSRF, escaping."""

import re
from pathlib import Path

from fastapi.testclient import TestClient

from surd.review import auth, queue
from surd.review.app import create_app
from surd.settings import load_settings

XSS = "<script>alert('x')</script> a castle"


def _client(tmp_path: Path) -> TestClient:
    settings = load_settings(data_root=tmp_path)
    engine = queue.connect(settings.review_database_url)
    auth.add_steward(engine, "alice", "correct horse")
    queue.enqueue(
        engine,
        [
            {
                "sample_id": "s1",
                "simple_prompt": "a cat",
                "complex_prompt": XSS,
                "negative_prompt": None,
                "p_simple": 0.7,
                "p_complex": 0.3,
                "source": "civitai",
                "source_url": "https://civitai.com/images/1",
            }
        ],
    )
    return TestClient(create_app(settings))


def test_anonymous_is_sent_to_login(tmp_path: Path) -> None:
    c = _client(tmp_path)
    for method, path in (("get", "/"), ("get", "/image/s1"), ("post", "/decide")):
        r = getattr(c, method)(path, follow_redirects=False)
        assert r.status_code in (303, 422) and (r.status_code == 422 or r.headers["location"] == "/login")


def test_login_review_escaped_and_csrf(tmp_path: Path) -> None:
    c = _client(tmp_path)
    assert c.post("/login", data={"name": "alice", "password": "nope"}).status_code == 401
    assert c.post("/login", data={"name": "alice", "password": "correct horse"}).status_code == 200
    page = c.get("/").text
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    csrf = re.search(r'name=csrf value="([^"]+)"', page).group(1)
    bad = c.post("/decide", data={"csrf": "forged", "sample_id": "s1", "decision": "accept"})
    assert bad.status_code == 403
    ok = c.post(
        "/decide", data={"csrf": csrf, "sample_id": "s1", "decision": "accept", "simple_prompt": "a grey cat"}
    )
    assert ok.status_code == 200 and "Nothing left to review" in ok.text
    standing = queue.effective(queue.connect(f"sqlite:///{tmp_path / 'review' / 'queue.db'}"))
    assert standing["s1"]["simple_prompt"] == "a grey cat" and standing["s1"]["actor"] == "alice"
