"""The review stage: enqueue what CLIP kept; decisions come from stewards (or a named policy)."""

from __future__ import annotations

from storage.layout import DataDir
from storage.schemas import OK
from surd.parallel import batched
from surd.review import policies, queries, queue
from surd.settings import Settings


def enqueue_kept(settings: Settings, data: DataDir) -> int:
    """Enqueue every CLIP-kept sample not yet queued; idempotent. Returns how many were added."""
    engine = queue.connect(settings.review_database_url)
    have = queries.queued_ids(engine)
    todo = [
        r
        for r in data.table("clip_scores").iter_rows(["sample_id", "status", "p_simple", "p_complex"])
        if r["status"] == OK and r["sample_id"] not in have
    ]
    ids = {r["sample_id"] for r in todo}
    caps = data.table("captions").lookup(ids, ["simple_prompt"])
    raw = data.table("raw_items").lookup(
        ids,
        ["complex_prompt", "negative_prompt", "source", "source_url", "nsfw_level"],
    )
    added = 0
    for batch in batched(todo, settings.part_size):
        rows = [{**r, **caps[r["sample_id"]], **raw[r["sample_id"]]} for r in batch]
        for row in rows:
            row.pop("status", None)
        added += queue.enqueue(engine, rows, settings.review.audit_share)
    engine.dispose()
    return added


def apply_auto_policy(settings: Settings) -> int:
    engine = queue.connect(settings.review_database_url)
    try:
        return policies.auto_review(engine, settings.review.auto_policy, settings.review.auto_min_margin)
    finally:
        engine.dispose()
