"""Review sessions that end, a login limiter that holds, and the smaller hardening, over real HTTP
(`surd review serve` under uvicorn on loopback, clients on other loopback addresses)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from surd.app.web.app import create_app
from surd.config import load_settings
from surd.review import auth, limiter, queue
from surd.review.text import clean_prompt
from tests.conftest import free_port
from tests.serve import ThreadedServer, wait_until_up

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`


def _serve(root: Path, port: int, workers: int = 1) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env |= {
        "SURD_DATA_ROOT": str(root),
        "SURD_REVIEW__SESSION_SECRET": "s" * 32,
        "SURD_REVIEW__SECURE_COOKIES": "false",  # plain HTTP on loopback: the client must send it
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "surd", "review", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stderr=subprocess.PIPE,
    )
    log = lambda: proc.stderr.read().decode() if proc.stderr else ""  # noqa: E731
    wait_until_up(f"http://127.0.0.1:{port}/login", proc, 60, "review server", log)
    return proc


@pytest.fixture
def server(tmp_path: Path):
    settings = load_settings(data_root=tmp_path)
    engine = queue.connect(settings.review_database_url)
    queue.enqueue(
        engine,
        [
            {
                "sample_id": "s0",
                "simple_prompt": "a cat",
                "p_simple": 0.7,
                "p_complex": 0.3,
                "source": "civitai",
            }
        ],
        0.0,
    )
    auth.add_steward(engine, "alice", "alice password", "admin")
    auth.add_steward(engine, "bob", "bob password")
    port = free_port()
    proc = _serve(tmp_path, port)
    yield {"url": f"http://127.0.0.1:{port}", "engine": engine, "port": port, "root": tmp_path}
    proc.terminate()
    proc.wait(timeout=30)
    engine.dispose()


def client(url: str, address: str = "127.0.0.1", **kw) -> httpx.Client:
    """A browser on `address` (any 127.x.y.z is this machine's loopback)."""
    return httpx.Client(
        base_url=url, transport=httpx.HTTPTransport(local_address=address), follow_redirects=False, **kw
    )


def login(c: httpx.Client, name: str, password: str, **headers: str) -> httpx.Response:
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    return c.post("/login", data={"name": name, "password": password, "csrf": token}, headers=headers)


def csrf_of(c: httpx.Client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', c.get("/").text).group(1)


def replay(url: str, cookie: str) -> int:
    """A request carrying only a copied session cookie: 200 if it still opens the queue."""
    with client(url, cookies={"surd_review": cookie}) as c:
        return c.get("/").status_code


def test_a_copied_cookie_ends_with_logout_reset_and_removal(server) -> None:
    url, engine = server["url"], server["engine"]
    with client(url) as c:
        assert login(c, "bob", "bob password").status_code == 303
        cookie = c.cookies["surd_review"]
        assert replay(url, cookie) == 200
        assert c.post("/logout", data={"csrf": csrf_of(c)}).status_code == 303
    assert replay(url, cookie) == 303  # logged out: every copy of the cookie is dead
    with client(url) as c:
        login(c, "bob", "bob password")
        cookie = c.cookies["surd_review"]
    auth.add_steward(engine, "bob", "a new password")  # an admin resets the password
    assert replay(url, cookie) == 303
    with client(url) as c:
        login(c, "bob", "a new password")
        cookie = c.cookies["surd_review"]
    auth.remove_steward(engine, "bob")
    auth.add_steward(engine, "bob", "bob is back", "admin")  # the name re-created, now an admin
    assert replay(url, cookie) == 303
    with client(url, cookies={"surd_review": cookie}) as c:
        assert c.get("/admin").status_code == 303  # the old cookie never inherits the new role


def test_a_password_reset_keeps_api_tokens(server) -> None:
    engine = server["engine"]
    token = auth.new_token(engine, "bob")
    auth.add_steward(engine, "bob", "another password")
    assert auth.check_token(engine, token) == ("bob", "steward")


def test_the_limit_holds_across_two_workers_and_ignores_forwarded_for(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path)
    engine = queue.connect(settings.review_database_url)
    auth.add_steward(engine, "alice", "alice password")
    port = free_port()
    proc = _serve(tmp_path, port, workers=2)
    try:
        codes = []
        for i in range(14):  # a new name each time, a new "address" each time in X-Forwarded-For
            with client(f"http://127.0.0.1:{port}", address="127.0.0.9") as c:
                codes.append(login(c, f"user{i}", "guess", **{"X-Forwarded-For": f"10.0.0.{i}"}).status_code)
        assert codes.count(401) == settings.review.login_attempts_per_minute and codes[-1] == 429, codes
        # the real steward, from her own address, is not locked out by the attack
        with client(f"http://127.0.0.1:{port}", address="127.0.0.10") as c:
            assert login(c, "alice", "alice password").status_code == 303
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        engine.dispose()


def test_an_attack_on_a_name_slows_the_attacker_not_the_steward(server) -> None:
    url = server["url"]
    with client(url, address="127.0.0.20") as attacker:
        codes = [login(attacker, "alice", f"guess{i}").status_code for i in range(5)]
    assert codes[:3] == [401] * 3 and codes[3] == 429  # from the third miss: a growing wait
    with client(url, address="127.0.0.21") as alice:
        assert login(alice, "alice", "alice password").status_code == 303


def _at_once(url: str, address: str, names: list[str]) -> list[int]:
    """Wrong passwords for `names`, posted at the same moment from one address (each client has
    its login form first, so the posts race each other and nothing else)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    clients = [client(url, address=address) for _ in names]
    tokens = [re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1) for c in clients]
    go = threading.Barrier(len(names))

    def post(i: int) -> int:
        go.wait()
        data = {"name": names[i], "password": "wrong", "csrf": tokens[i]}
        return clients[i].post("/login", data=data).status_code

    try:
        with ThreadPoolExecutor(len(names)) as pool:
            return list(pool.map(post, range(len(names))))
    finally:
        for c in clients:
            c.close()


def test_forty_wrong_passwords_at_once_count_as_forty(tmp_path: Path) -> None:
    """The limit is reserved before the password hash: 40 at once from one address give the 10
    a minute allows and 429 for the rest; on one name, the 3 free tries."""
    settings = load_settings(data_root=tmp_path)
    queue.connect(settings.review_database_url).dispose()
    port = free_port()
    proc = _serve(tmp_path, port, workers=2)
    try:
        url = f"http://127.0.0.1:{port}"
        codes = _at_once(url, "127.0.0.40", [f"user{i}" for i in range(40)])
        assert sorted(codes) == [401] * settings.review.login_attempts_per_minute + [429] * 30, codes
        codes = _at_once(url, "127.0.0.41", ["alice"] * 40)
        assert sorted(codes) == [401] * 3 + [429] * 37, codes
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_full_table_never_evicts_a_locked_out_address(tmp_path: Path, monkeypatch) -> None:
    engine = queue.connect(load_settings(data_root=tmp_path).review_database_url)
    monkeypatch.setattr(limiter, "MAX_ROWS", 100)
    for i in range(10):  # this address is locked out for the minute
        assert limiter.reserve(engine, "10.9.9.9", f"x{i}", per_minute=10) == 0.0
    assert limiter.wait_seconds(engine, "10.9.9.9", "y") > 0
    for i in range(500):  # a flood of new addresses fills the table
        limiter.reserve(engine, f"10.2.{i // 250}.{i % 250}", f"n{i}", per_minute=10)
    assert limiter.size(engine) <= 100
    assert limiter.wait_seconds(engine, "10.9.9.9", "y") > 0  # still locked out: never evicted
    assert limiter.reserve(engine, "10.9.9.9", "z", per_minute=10) > 0


def test_the_limiter_stays_bounded_under_many_names(tmp_path: Path, monkeypatch) -> None:
    engine = queue.connect(load_settings(data_root=tmp_path).review_database_url)
    monkeypatch.setattr(limiter, "MAX_ROWS", 1000)
    for i in range(3000):
        limiter.failed(engine, f"10.1.{i // 250}.{i % 250}", "n" * 128 + str(i), per_minute=10)
    assert limiter.size(engine) <= 1000
    long_name = "x" * 1_000_000
    assert auth.check(engine, long_name, "pw") is None  # never hashed, never stored


def test_smaller_hardening(server, tmp_path: Path) -> None:
    url, engine = server["url"], server["engine"]
    token = auth.new_token(engine, "alice")
    bearer = {"Authorization": f"Bearer {token}"}
    with client(url) as api:
        r = api.post(
            "/api/claim", content=b'{"n": 1e400}', headers=bearer | {"Content-Type": "application/json"}
        )
        assert r.status_code == 422 and r.headers["Cache-Control"] == "no-store"
        assert api.get("/api/progress", headers=bearer).headers["Cache-Control"] == "no-store"
        assert api.get("/api/export", headers=bearer).headers["Cache-Control"] == "no-store"
        r = api.get("/admin/", headers={"Host": "evil.example"})  # no redirect built from Host
        assert "evil.example" not in r.headers.get("location", "")
        # one rule for edited prompts, with a message
        sid = api.post("/api/claim", json={"n": 1}, headers=bearer).json()["items"][0]["sample_id"]
        bad = api.post(
            "/api/decide",
            json={"sample_id": sid, "decision": "accept", "simple_prompt": "a\x00cat"},
            headers=bearer,
        )
        assert bad.status_code == 422 and "control characters" in bad.text
        long = api.post(
            "/api/decide",
            json={"sample_id": sid, "decision": "accept", "simple_prompt": "a" * 501},
            headers=bearer,
        )
        assert long.status_code == 422 and "at most 500" in long.text
    with client(url) as web:
        login(web, "alice", "alice password")
        csrf = csrf_of(web)
        r = web.post("/admin/tokens", data={"csrf": csrf, "name": "nobody"})
        assert r.status_code == 422 and "no steward" in r.text  # not a 500
        r = web.post(
            "/decide",
            data={"csrf": csrf, "sample_id": "s0", "decision": "accept", "simple_prompt": "b" * 501},
        )
        assert r.status_code == 422 and "at most 500" in r.text  # the web form no longer truncates
        assert web.get("/image/not-queued").status_code == 404
        assert web.post("/login", data={"name": "alice", "password": "alice password"}).status_code == 403


def test_500s_carry_the_security_headers(tmp_path: Path) -> None:
    app = create_app(load_settings(data_root=tmp_path))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with ThreadedServer(app, free_port()) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.get("/boom")
    assert (
        r.status_code == 500
        and r.headers["X-Frame-Options"] == "DENY"
        and "default-src" in r.headers["Content-Security-Policy"]
    )


def test_edited_prompts_are_normalised() -> None:
    assert clean_prompt("  a \u202ecat\u202c  on\ta\nmat ") == "a cat on a mat"
    assert clean_prompt("   ") is None
    with pytest.raises(ValueError, match="control characters"):
        clean_prompt("a\x07cat")
