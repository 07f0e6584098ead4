"""The review server over real HTTP (uvicorn on loopback): 20 stewards at once on SQLite and on
PostgreSQL, lease expiry and reclaim, and a restart in the middle of a review."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from surd.app.web.app import create_app
from surd.config import load_settings
from surd.review import auth, queries, queue
from surd.review.schema import decisions
from tests.conftest import free_port
from tests.serve import ThreadedServer, wait_until_up

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

STEWARDS = 20
ITEMS = 240


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tmp_path: Path):
    review = {"audit_share": 0.25, "lease_seconds": 600}
    if request.param == "postgresql":
        review["database_url"] = request.getfixturevalue("postgres").new_database()
    return load_settings(data_root=tmp_path, review=review)


def _seed(settings, n: int) -> dict[str, str]:
    engine = queue.connect(settings.review_database_url)
    rows = [
        {
            "sample_id": f"s{i:04d}",
            "simple_prompt": f"item {i}",
            "p_simple": 0.7,
            "p_complex": 0.3,
            "source": "civitai",
        }
        for i in range(n)
    ]
    queue.enqueue(engine, rows, settings.review.audit_share)
    tokens = {}
    for k in range(STEWARDS):
        auth.add_steward(engine, f"st{k:02d}", "password-123")
        tokens[f"st{k:02d}"] = auth.new_token(engine, f"st{k:02d}")
    engine.dispose()
    return tokens


def _verdict(steward: str, sid: str) -> str:
    """Deterministic, and different stewards sometimes disagree."""
    return "accept" if hashlib.sha256(f"{steward}/{sid}".encode()).digest()[0] < 200 else "reject"


def test_twenty_stewards_in_parallel_never_share_an_item_and_lose_nothing(settings) -> None:
    tokens = _seed(settings, ITEMS)
    claims: list[tuple[str, str]] = []
    decided: list[tuple[str, str]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def steward(name: str, url: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=60) as c:
            while True:
                r = c.post("/api/claim", json={"n": 4})
                if r.status_code != 200:
                    errors.append(f"claim {r.status_code} {r.text}")
                    return
                got = [i["sample_id"] for i in r.json()["items"]]
                if not got:
                    # an item may still wait for a second (or third) steward: stop when none is open
                    if c.get("/api/progress").json()["remaining"] == 0:
                        return
                    time.sleep(0.05)
                    continue
                with lock:
                    claims.extend((name, sid) for sid in got)
                for sid in got:
                    v = _verdict(name, sid)
                    r = c.post(
                        "/api/decide",
                        json={
                            "sample_id": sid,
                            "decision": v,
                            "reason": "low_quality" if v == "reject" else None,
                        },
                    )
                    if r.status_code != 200:
                        errors.append(f"decide {sid} {r.status_code} {r.text}")
                        continue
                    with lock:
                        decided.append((name, sid))

    with ThreadedServer(create_app(settings), free_port()) as server:
        threads = [threading.Thread(target=steward, args=(f"st{k:02d}", server.url)) for k in range(STEWARDS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    assert not errors, errors[:5]
    # every claim was decided by the one steward who held it: nothing leased to two at once
    assert Counter(claims) == Counter(decided) and max(Counter(claims).values()) == 1
    engine = queue.connect(settings.review_database_url)
    with engine.connect() as conn:
        log = conn.execute(sa.select(decisions.c.sample_id, decisions.c.actor)).all()
    assert Counter((a, s) for s, a in log) == Counter(decided)  # every 200 is in the log, and nothing else
    prog = queries.progress(engine)
    assert prog["items"] == ITEMS and prog["final"] == ITEMS and prog["remaining"] == 0
    assert prog["accepted"] + prog["rejected"] == ITEMS and prog["team_decisions"] == len(decided)
    needed = dict(engine.connect().execute(sa.text("select sample_id, needed from items")).all())
    per_item = Counter(sid for _, sid in decided)
    audit = [s for s, k in needed.items() if k == 2]
    assert 30 < len(audit) < 90  # about a quarter
    assert all(per_item[s] == 1 for s, k in needed.items() if k == 1)
    assert all(per_item[s] in (2, 3) for s in audit)  # two, or three after a split
    assert len({n for n, _ in decided}) >= 10  # the work really was spread over the stewards
    assert queries.agreement(engine)["audit_items_compared"] == len(audit)
    engine.dispose()


def test_lease_expiry_and_reclaim_over_http(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path, review={"lease_seconds": 1})
    tokens = _seed(settings, 3)
    with ThreadedServer(create_app(settings), free_port()) as server:
        a = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['st00']}"})
        b = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['st01']}"})
        assert len(a.post("/api/claim", json={"n": 3}).json()["items"]) == 3
        assert b.post("/api/claim", json={"n": 3}).json()["items"] == []
        time.sleep(1.5)
        got = [i["sample_id"] for i in b.post("/api/claim", json={"n": 3}).json()["items"]]
        assert got == ["s0000", "s0001", "s0002"]
        r = a.post("/api/decide", json={"sample_id": "s0000", "decision": "accept"})
        assert r.status_code == 409 and "held by another steward" in r.text
        assert b.post("/api/decide", json={"sample_id": "s0000", "decision": "accept"}).status_code == 200


def _serve(settings, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env.update(SURD_DATA_ROOT=str(settings.data_root), SURD_REVIEW__SESSION_SECRET="s" * 32)
    proc = subprocess.Popen(
        [sys.executable, "-m", "surd", "review", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
    )
    log = lambda: proc.stderr.read() if proc.stderr else ""  # noqa: E731
    wait_until_up(f"http://127.0.0.1:{port}/login", proc, 60, "review server", log)
    return proc


def test_a_server_killed_mid_review_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path)
    tokens = _seed(settings, 400)
    port = free_port()
    server = _serve(settings, port)
    acknowledged: list[str] = []

    def steward(name: str) -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {tokens[name]}"}
        ) as c:
            try:
                while True:
                    for item in c.post("/api/claim", json={"n": 5}).json()["items"]:
                        if (
                            c.post(
                                "/api/decide", json={"sample_id": item["sample_id"], "decision": "accept"}
                            ).status_code
                            == 200
                        ):
                            acknowledged.append(item["sample_id"])
            except (httpx.HTTPError, ValueError):
                return  # the server died under us

    threads = [threading.Thread(target=steward, args=(f"st{k:02d}",)) for k in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < 60:
        time.sleep(0.01)
    server.send_signal(signal.SIGKILL)  # no shutdown, no flush: mid-request
    server.wait()
    for t in threads:
        t.join(timeout=60)
    server = _serve(settings, port)
    try:
        c = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {tokens['st00']}"}
        )
        prog = c.get("/api/progress").json()
        engine = queue.connect(settings.review_database_url)
        logged = [r["sample_id"] for r in queries.export_rows(engine, "audit")]
        assert set(acknowledged) <= set(logged)  # every 200 survived the kill
        assert len(logged) - len(acknowledged) <= 4  # at most one in flight per steward at the kill
        assert prog["team_decisions"] == len(logged) and prog["final"] + prog["remaining"] == 400
        # work goes on: the leases held at the kill belong to their stewards until they expire
        got = c.post("/api/claim", json={"n": 5}).json()["items"]
        assert (
            got
            and c.post(
                "/api/decide", json={"sample_id": got[0]["sample_id"], "decision": "accept"}
            ).status_code
            == 200
        )
        engine.dispose()
    finally:
        server.terminate()
        server.wait(timeout=30)
