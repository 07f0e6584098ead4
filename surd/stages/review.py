"""The review stage: enqueue what CLIP and the near-duplicate stage kept; decisions come from
stewards (or a named policy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from storage.layout import DataDir
from storage.schemas import is_ok
from surd.parallel import batched
from surd.review import policies, queries, queue
from surd.settings import Settings
from surd.stages import near_duplicates, takedown

LOOKUP_CHUNK = 8_192  # new samples whose prompts are looked up in one pass over the tables


def _new_kept(data: DataDir, queued: pa.Array) -> Iterator[dict[str, Any]]:
    """The rows that CLIP and the near-duplicate stage kept, not yet queued, a part at a time:
    filtered in Arrow, so only new rows ever become Python objects (a rerun with nothing new
    makes none)."""
    scores = data.table("clip_scores")
    went_on = near_duplicates.kept(data)
    for part in scores.parts():
        t = scores.read_part(part, ["sample_id", "status", "p_simple", "p_complex", "nsfw_score"])
        keep = pc.and_(
            pc.and_(is_ok(t), pc.is_in(t.column("sample_id"), value_set=went_on)),
            pc.invert(pc.is_in(t.column("sample_id"), value_set=queued)),
        )
        yield from t.filter(keep).drop_columns(["status"]).to_pylist()


def enqueue_kept(settings: Settings, data: DataDir) -> int:
    """Enqueue every CLIP-kept sample not yet queued; idempotent. Returns how many were added.
    Items a takedown covers are queued without their prompts and rejected as the takedown."""
    matcher = takedown.load(settings)
    gone = takedown.resolve(matcher, data)
    engine = queue.connect(settings.review_database_url)
    try:
        queued = pa.array(queries.queued_ids(engine), pa.string())
        added = 0
        for chunk in batched(_new_kept(data, queued), LOOKUP_CHUNK):  # one pass over the tables each
            ids = [r["sample_id"] for r in chunk]
            caps = data.table("captions").lookup(ids, ["simple_prompt"])
            raw = data.table("raw_items").lookup(
                ids, ["complex_prompt", "negative_prompt", "source", "source_url", "nsfw_level"]
            )
            for batch in batched(iter(chunk), settings.part_size):
                rows = [
                    r if r["sample_id"] in gone else {**r, **caps[r["sample_id"]], **raw[r["sample_id"]]}
                    for r in batch
                ]  # a taken-down item is queued by its id and scores only, and rejected below
                added += queue.enqueue(engine, rows, settings.review.audit_share)
    finally:
        engine.dispose()
    if matcher:
        takedown.enforce(settings, data, matcher)
    return added


def apply_auto_policy(settings: Settings) -> int:
    engine = queue.connect(settings.review_database_url)
    try:
        return policies.auto_review(engine, settings.review.auto_policy, settings.review.auto_min_margin)
    finally:
        engine.dispose()
