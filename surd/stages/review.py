"""The review stage: enqueue what went on through every declared stage (surd.chain); decisions
come from stewards (or a named policy). A queued item that a stage dropped since (a stage added to
the pipeline after it was queued) is withdrawn: rejected as that stage, over any steward's decision."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from storage.layout import DataDir
from storage.schemas import is_ok
from surd import chain
from surd.parallel import batched
from surd.review import policies, queries, queue
from surd.review.kinds import ActorKind, Decision
from surd.review.outcome import OVERRIDING, WITHDRAWN_ACTOR
from surd.settings import Settings
from surd.stages import takedown

LOOKUP_CHUNK = 8_192  # new samples whose prompts are looked up in one pass over the tables


def _new_kept(data: DataDir, went_on: pa.Array, queued: pa.Array) -> Iterator[dict[str, Any]]:
    """The CLIP scores of the samples that went on, not yet queued, a part at a time in the CLIP
    table's storage order: filtered in Arrow, so only new rows ever become Python objects (a rerun
    with nothing new makes none)."""
    scores = data.table("clip_scores")
    for part in scores.parts():
        t = scores.read_part(part, ["sample_id", "status", "p_simple", "p_complex", "nsfw_score"])
        keep = pc.and_(
            pc.and_(is_ok(t), pc.is_in(t.column("sample_id"), value_set=went_on)),
            pc.invert(pc.is_in(t.column("sample_id"), value_set=queued)),
        )
        yield from t.filter(keep).drop_columns(["status"]).to_pylist()


def enqueue_kept(settings: Settings, data: DataDir, went_on: pa.Array | None = None) -> int:
    """Enqueue every sample that went on through the pipeline (`went_on`, by default read now)
    and is not queued yet; idempotent. Returns how many were added. Items a takedown covers are
    queued without their prompts and rejected as the takedown."""
    went_on = chain.PIPELINE.went_on(data) if went_on is None else went_on
    matcher = takedown.load(settings)
    gone = takedown.resolve(matcher, data)
    engine = queue.connect(settings.review_database_url)
    try:
        queued = pa.array(queries.queued_ids(engine), pa.string())
        added = 0
        for chunk in batched(_new_kept(data, went_on, queued), LOOKUP_CHUNK):  # one pass over the tables each
            ids = [r["sample_id"] for r in chunk]
            caps = data.table("captions").lookup(ids, ["simple_prompt"])
            detector = data.table("nsfw_scores").lookup(ids, ["nsfw_detector"])
            raw = data.table("raw_items").lookup(
                ids, ["complex_prompt", "negative_prompt", "source", "source_url", "nsfw_level"]
            )
            for batch in batched(iter(chunk), settings.part_size):
                rows = [
                    r
                    if r["sample_id"] in gone
                    else {
                        **r,
                        **caps[r["sample_id"]],
                        **raw[r["sample_id"]],
                        **detector.get(r["sample_id"], {}),
                    }
                    for r in batch
                ]  # a taken-down item is queued by its id and scores only, and rejected below
                added += queue.enqueue(engine, rows, settings.review.audit_share)
    finally:
        engine.dispose()
    if matcher:
        takedown.enforce(settings, data, matcher)
    return added


def withdraw(settings: Settings, data: DataDir, went_on: pa.Array | None = None) -> int:
    """Reject, as the stage that dropped it (actor `stage:<table>`, its reason), every queued item
    that no longer went on because a stage dropped it, unless a takedown or a withdrawal settled it
    already. Items a stage has yet to decide stay queued. Returns how many were withdrawn."""
    went_on = chain.PIPELINE.went_on(data) if went_on is None else went_on
    engine = queue.connect(settings.review_database_url)
    try:
        queued = queries.states(engine)
        outside = queued.filter(pc.invert(pc.is_in(queued.column("sample_id"), value_set=went_on)))
        actors = outside.column("final_actor").to_pylist()
        ids = [
            sid
            for sid, actor in zip(outside.column("sample_id").to_pylist(), actors, strict=True)
            if not str(actor or "").startswith(OVERRIDING)
        ]
        dropped = chain.PIPELINE.first_drop(data, pa.array(ids, pa.string()))
        todo = [
            (sid, *dropped[sid])
            for sid in ids
            if sid in dropped and not dropped[sid][1].startswith(takedown.REASON)
        ]
        for sid, _, _ in todo:
            queue.release_leases(engine, sample_id=sid)
        decisions = (
            {
                "sample_id": sid,
                "actor": f"{WITHDRAWN_ACTOR}{table}",
                "actor_kind": ActorKind.AUTO,
                "decision": Decision.REJECT,
                "reason": reason,
            }
            for sid, table, reason in todo
        )
        return queue.decide_many(engine, decisions) if todo else 0
    finally:
        engine.dispose()


def apply_auto_policy(settings: Settings) -> int:
    engine = queue.connect(settings.review_database_url)
    try:
        return policies.auto_review(engine, settings.review.auto_policy, settings.review.auto_min_margin)
    finally:
        engine.dispose()
