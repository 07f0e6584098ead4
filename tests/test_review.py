"""The review queue on SQLite: idempotent enqueue, exclusive leases, append-only decisions."""

from pathlib import Path

import pytest

from surd.review import auth, queue


@pytest.fixture
def engine(tmp_path: Path):
    e = queue.connect(f"sqlite:///{tmp_path / 'q.db'}")
    queue.enqueue(
        e,
        [
            {"sample_id": f"s{i}", "simple_prompt": "a cat sitting down", "p_simple": 0.9, "p_complex": 0.1}
            for i in range(5)
        ],
    )
    return e


def test_enqueue_is_idempotent(engine) -> None:
    assert queue.enqueue(engine, [{"sample_id": "s0", "p_simple": 1, "p_complex": 0}]) == 0
    assert len(queue.queued_ids(engine)) == 5


def test_two_stewards_never_hold_the_same_item(engine) -> None:
    a = {i["sample_id"] for i in queue.claim(engine, "alice", 3, 60)}
    b = {i["sample_id"] for i in queue.claim(engine, "bob", 3, 60)}
    assert len(a) == 3 and len(b) == 2 and not a & b


def test_expired_lease_returns(engine) -> None:
    queue.claim(engine, "alice", 5, -1)
    assert len(queue.claim(engine, "bob", 5, 60)) == 5


def test_decisions_append_only_with_undo(engine) -> None:
    first = queue.decide(engine, "s1", "alice", "accept", simple_prompt="a cat")
    queue.decide(engine, "s2", "alice", "reject", reason="nsfw")
    with engine.begin() as conn:
        conn.execute(
            queue.decisions.insert().values(
                sample_id="s1",
                actor="alice",
                actor_kind="human",
                decision="undo",
                previous_id=first,
                created_at=queue.datetime.now(queue.UTC),
            )
        )
    standing = queue.effective(engine)
    assert "s1" not in standing and standing["s2"]["reason"] == "nsfw"
    with pytest.raises(ValueError, match="needs a reason"):
        queue.decide(engine, "s3", "alice", "reject")


def test_auto_policy_is_recorded_as_auto(engine) -> None:
    queue.decide(engine, "s0", "alice", "reject", reason="nsfw")
    assert queue.auto_review(engine, "demo-margin-v1", 0.5) == 4
    standing = queue.effective(engine)
    assert standing["s0"]["actor_kind"] == "human"
    assert {standing[f"s{i}"]["actor"] for i in range(1, 5)} == {"policy:demo-margin-v1"}
    with pytest.raises(ValueError, match="valid: none, demo-margin-v1"):
        queue.auto_review(engine, "yolo", 0)


def test_passwords_hashed_and_checked(engine) -> None:
    auth.add_steward(engine, "alice", "correct horse", "admin")
    assert auth.check(engine, "alice", "correct horse") == "admin"
    assert auth.check(engine, "alice", "wrong") is None and auth.check(engine, "nobody", "x") is None
    with engine.connect() as conn:
        stored = conn.execute(auth.stewards.select()).mappings().first()["password_hash"]
    assert stored.startswith("$argon2") and "correct horse" not in stored
