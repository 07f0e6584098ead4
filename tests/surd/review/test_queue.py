"""The review queue on SQLite and on a real PostgreSQL server: leases, decisions, audit, migrations."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from surd.review import auth, export, outcome, policies, queries, queue
from surd.review.db import current_revision, head_revision
from surd.review.schema import decisions, items


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    return request.getfixturevalue("postgres").new_database()


def _rows(n: int, **extra):
    return [
        {
            "sample_id": f"s{i}",
            "simple_prompt": "a cat sitting down",
            "p_simple": 0.9 - i / 100,
            "p_complex": 0.1 + i / 100,
            "source": "civitai" if i % 2 else "lexica",
            "nsfw_level": str(i % 3),
            **extra,
        }
        for i in range(n)
    ]


@pytest.fixture
def engine(url: str):
    e = queue.connect(url)
    assert queue.enqueue(e, _rows(5)) == 5
    yield e
    e.dispose()


def _log(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(decisions).order_by(decisions.c.id)).mappings()]


def test_enqueue_is_idempotent(engine) -> None:
    assert queue.enqueue(engine, _rows(6)) == 1
    assert len(queries.queued_ids(engine)) == 6
    assert current_revision(engine) == head_revision()


def test_two_stewards_never_hold_the_same_item_and_held_items_come_back_first(engine) -> None:
    a = [i["sample_id"] for i in queue.claim(engine, "alice", 3, 60)]
    b = {i["sample_id"] for i in queue.claim(engine, "bob", 3, 60)}
    assert len(a) == 3 and len(b) == 2 and not set(a) & b
    assert [i["sample_id"] for i in queue.claim(engine, "alice", 3, 60)] == a
    assert queue.claim(engine, "carol", 3, 60) == []


def test_expired_lease_returns(engine) -> None:
    queue.claim(engine, "alice", 5, -1)
    assert len(queue.claim(engine, "bob", 5, 60)) == 5


def test_decision_on_an_item_another_steward_holds_is_refused(engine) -> None:
    queue.claim(engine, "alice", 1, 60)
    with pytest.raises(queue.QueueError, match="held by another"):
        queue.decide(engine, "s0", "bob", "accept")
    queue.decide(engine, "s0", "alice", "accept")
    with pytest.raises(queue.QueueError, match="already decided"):
        queue.decide(engine, "s0", "bob", "reject", reason="nsfw")
    with pytest.raises(ValueError, match="needs a reason"):
        queue.decide(engine, "s1", "alice", "reject")
    with pytest.raises(queue.QueueError, match="no item"):
        queue.decide(engine, "nope", "alice", "accept")


def test_log_is_append_only_change_of_mind_and_undo(engine) -> None:
    queue.claim(engine, "alice", 2, 60)
    queue.decide(engine, "s0", "alice", "accept", simple_prompt="a cat")
    queue.decide(engine, "s1", "alice", "reject", reason="nsfw")
    before = _log(engine)
    queue.decide(engine, "s0", "alice", "reject", reason="low_quality")  # change of mind
    assert queue.undo(engine, "alice") == "s0"  # undoes the latest standing decision: s0's reject
    log = _log(engine)
    assert log[: len(before)] == before  # nothing rewritten
    change, undo = log[-2], log[-1]
    assert change["previous_decision"] == "accept" and change["previous_prompt"] == "a cat"
    assert undo["decision"] == "undo" and undo["previous_id"] == change["id"]
    assert undo["previous_decision"] == "reject" and undo["previous_reason"] == "low_quality"
    standing = outcome.effective(engine)
    assert "s0" not in standing and standing["s1"]["reason"] == "nsfw"
    # the undone item is back in alice's hands, first in line
    assert queue.claim(engine, "alice", 1, 60)[0]["sample_id"] == "s0"
    assert queue.undo(engine, "alice") == "s1" and queue.undo(engine, "alice") is None
    assert outcome.effective(engine) == {}


def test_audit_items_need_two_and_a_split_needs_a_third(url: str) -> None:
    e = queue.connect(url)
    queue.enqueue(e, _rows(3), audit_share=1.0)
    plan = {
        "alice": {"s0": "accept", "s1": "accept", "s2": "reject"},
        "bob": {"s0": "reject", "s1": "accept", "s2": "reject"},
    }
    for who, verdicts in plan.items():
        got = queue.claim(e, who, 3, 60)
        assert len(got) == 3
        for item in got:
            v = verdicts[item["sample_id"]]
            queue.decide(e, item["sample_id"], who, v, reason="nsfw" if v == "reject" else None)
    # s0: accept vs reject (split); s1 both accept; s2 both reject
    standing = outcome.effective(e)
    assert set(standing) == {"s1", "s2"} and standing["s1"]["actor"] == "alice,bob"
    assert [i["sample_id"] for i in queue.claim(e, "carol", 5, 60)] == ["s0"]
    queue.decide(e, "s0", "carol", "reject", reason="low_quality")
    final = outcome.effective(e)["s0"]
    assert final["decision"] == "reject" and final["reason"] in ("nsfw", "low_quality")
    ag = queries.agreement(e)
    # pairs (acc, rej), (acc, acc), (rej, rej): p_o = 2/3; p_accept 2/3 and 1/3, p_e = 2/9 + 2/9 = 4/9
    assert ag["audit_items_compared"] == 3 and ag["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert ag["cohen_kappa"] == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9), abs=1e-4)  # 0.4
    assert queue.is_audit("s0", 0.0) is False and queue.is_audit("s0", 1.0) is True
    e.dispose()


def test_filters(engine) -> None:
    got = queue.claim(engine, "alice", 5, 60, queue.Filters(source="civitai"))
    assert {i["sample_id"] for i in got} == {"s1", "s3"}
    queue.release_leases(engine, steward="alice")
    got = queue.claim(engine, "alice", 5, 60, queue.Filters(margin_min=0.75, nsfw_levels=("0", "1")))
    assert {i["sample_id"] for i in got} == {"s0", "s1"}  # margins 0.8, 0.78, 0.76; levels 0, 1, 2


def test_auto_policy_is_recorded_as_auto_and_leaves_the_band_to_stewards(engine) -> None:
    queue.claim(engine, "alice", 1, 60)
    queue.decide(engine, "s0", "alice", "reject", reason="nsfw")
    # margins: s1 0.78, s2 0.76, s3 0.74, s4 0.72; min 0.55 → accept ≥ 0.75, band [0.55, 0.75)
    assert policies.auto_review(engine, "demo-margin-v1", 0.55) == 2
    standing = outcome.effective(engine)
    assert standing["s0"]["actor_kind"] == "human"
    assert {k: v["actor"] for k, v in standing.items() if k != "s0"} == {
        "s1": "policy:demo-margin-v1",
        "s2": "policy:demo-margin-v1",
    }
    with pytest.raises(ValueError, match="valid: none, demo-margin-v1"):
        policies.auto_review(engine, "yolo", 0)


def test_exports_stream_every_item_and_every_decision(engine, tmp_path: Path) -> None:
    queue.claim(engine, "alice", 5, 60)
    queue.decide(engine, "s0", "alice", "accept", simple_prompt="a grey cat")
    queue.decide(engine, "s1", "alice", "reject", reason="nsfw")
    queue.undo(engine, "alice")
    n = export.write_parquet(queries.export_rows(engine, "outcomes", chunk=2), tmp_path / "o.parquet")
    t = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert n == 5 and [r["sample_id"] for r in t] == [f"s{i}" for i in range(5)]
    assert (
        t[0]["decision"] == "accept"
        and t[0]["simple_prompt"] == "a grey cat"
        and t[0]["caption"] == "a cat sitting down"
    )
    assert t[1]["state"] == "open" and t[1]["decision"] is None
    assert export.write_jsonl(queries.export_rows(engine, "audit"), tmp_path / "a.jsonl") == 3
    audit = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [a["decision"] for a in audit] == ["accept", "reject", "undo"]
    assert export.write_parquet(queries.export_rows(engine, "audit"), tmp_path / "a.parquet") == 3


def _v1_database(url: str) -> None:
    """A queue written by the first release of this code: create_all of its tables + schema_info=1."""
    from datetime import UTC, datetime

    meta = sa.MetaData()
    items = sa.Table(
        "items",
        meta,
        sa.Column("sample_id", sa.String(32), primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires", sa.DateTime(timezone=True)),
    )
    dec = sa.Table(
        "decisions",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(32), sa.ForeignKey("items.sample_id"), nullable=False, index=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("actor_kind", sa.String(8), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("simple_prompt", sa.Text),
        sa.Column("previous_id", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    info = sa.Table("schema_info", meta, sa.Column("version", sa.Integer, nullable=False))
    sa.Table(
        "stewards",
        meta,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    e = sa.create_engine(url)
    meta.create_all(e)
    now = datetime.now(UTC)
    with e.begin() as conn:
        conn.execute(info.insert().values(version=1))
        conn.execute(
            items.insert(),
            [
                {
                    "sample_id": s,
                    "payload": json.dumps(
                        {
                            "sample_id": s,
                            "p_simple": 0.8,
                            "p_complex": 0.2,
                            "source": "lexica",
                            "simple_prompt": f"A Tabby Cat {s}",
                            "complex_prompt": "Café, 8K",
                        }
                    ),
                    "enqueued_at": now,
                }
                for s in ("a", "b", "c")
            ],
        )
        rows = [
            ("a", "alice", "human", "accept", None, "an edited cat", None),
            ("b", "alice", "human", "reject", "nsfw", None, None),
            ("c", "policy:demo-margin-v1", "auto", "accept", None, None, None),
            ("b", "alice", "human", "undo", None, None, 2),
            ("b", "bob", "human", "reject", "duplicate", None, None),
        ]
        for sid, actor, kind, d, reason, prompt, prev in rows:
            conn.execute(
                dec.insert().values(
                    sample_id=sid,
                    actor=actor,
                    actor_kind=kind,
                    decision=d,
                    reason=reason,
                    simple_prompt=prompt,
                    previous_id=prev,
                    created_at=now,
                )
            )
    e.dispose()


def test_a_v1_database_migrates_without_losing_a_decision(url: str) -> None:
    _v1_database(url)
    e = queue.connect(url)
    assert current_revision(e) == head_revision()
    log = _log(e)
    assert [(r["sample_id"], r["actor"], r["decision"]) for r in log] == [
        ("a", "alice", "accept"),
        ("b", "alice", "reject"),
        ("c", "policy:demo-margin-v1", "accept"),
        ("b", "alice", "undo"),
        ("b", "bob", "reject"),
    ]
    standing = outcome.effective(e)
    assert standing["a"]["simple_prompt"] == "an edited cat" and standing["a"]["actor"] == "alice"
    assert standing["b"]["actor"] == "bob" and standing["b"]["reason"] == "duplicate"
    assert standing["c"]["actor_kind"] == "auto"
    assert queries.item(e, "a")["source"] == "lexica"
    with e.connect() as conn:  # text search reads what the migration filled in for queued items
        found = conn.execute(sa.select(items.c.sample_id).where(items.c.prompts.like("%tabby cat b%café%")))
        assert list(found.scalars()) == ["b"]
    e.dispose()
    assert current_revision(queue.connect(url)) == head_revision()  # idempotent


def test_passwords_and_tokens_are_stored_hashed(engine) -> None:
    auth.add_steward(engine, "alice", "correct horse", "admin")
    assert auth.check(engine, "alice", "correct horse") == "admin"
    assert auth.check(engine, "alice", "wrong") is None and auth.check(engine, "nobody", "x") is None
    token = auth.new_token(engine, "alice")
    assert (
        auth.check_token(engine, token) == ("alice", "admin")
        and auth.check_token(engine, token + "x") is None
    )
    with engine.connect() as conn:
        dump = json.dumps(
            [dict(r) for r in conn.execute(sa.text("select * from stewards")).mappings()], default=str
        )
        dump += json.dumps(
            [dict(r) for r in conn.execute(sa.text("select * from tokens")).mappings()], default=str
        )
    assert "$argon2" in dump and "correct horse" not in dump and token not in dump
    with pytest.raises(ValueError, match="8 to 1024 characters"):
        auth.add_steward(engine, "bob", "short")
    with pytest.raises(ValueError, match="policy:"):
        auth.add_steward(engine, "policy:x", "long enough")


def test_a_steward_overrides_a_policy_decision(url: str) -> None:
    e = queue.connect(url)
    queue.enqueue(e, _rows(2), audit_share=1.0)  # even an audit item: the override settles it
    assert policies.auto_review(e, "demo-margin-v1", 0.1) == 2
    queue.decide(e, "s0", "alice", "reject", reason="nsfw")
    got = outcome.effective(e)
    assert got["s0"]["actor_kind"] == "human" and got["s0"]["decision"] == "reject"
    assert got["s1"]["actor_kind"] == "auto"
    e.dispose()


def test_decide_many_commits_a_batch_at_a_time_and_a_failed_batch_leaves_nothing(engine) -> None:
    ids = sorted(outcome_ids := [r["sample_id"] for r in _rows(5)])
    told: list[int] = []
    good = [
        {"sample_id": s, "actor": "policy:p", "actor_kind": "auto", "decision": "accept"} for s in ids[:3]
    ]
    bad = {"sample_id": ids[3], "actor": "policy:p", "actor_kind": "auto", "decision": "maybe"}
    with pytest.raises(ValueError, match="accept or reject"):
        queue.decide_many(engine, [*good, bad], per_transaction=2, each=told.append)
    decided = outcome.effective(engine)
    assert sorted(decided) == ids[:2]  # the first transaction's two; the second (ids[2], bad) rolled back
    assert told == [1, 2, 3]
    rest = [{**g, "decision": "reject", "reason": "low_margin"} for g in good[2:]]
    assert queue.decide_many(engine, rest, per_transaction=2) == 1
    assert sorted(outcome.effective(engine)) == ids[:3] and len(outcome_ids) == 5
