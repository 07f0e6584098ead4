"""Which items are taken down: the takedown log (surd.review.takedowns) as a matcher over raw-item
rows, and the stored sample ids it covers. A taken-down item is dropped with the reason
`takedown:<id>` by every stage that meets it: the crawl keeps only its ids, the image, caption and
CLIP stages write a drop row instead of working on it, the review rejects it, a release leaves it
out (the manifest lists it as removed, with the reason)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow.parquet as pq
import sqlalchemy as sa

from storage.layout import DataDir
from storage.schemas import DROPPED
from surd.ids import sample_id
from surd.review import queue
from surd.review import takedowns as log
from surd.review.db import reader
from surd.review.kinds import ActorKind, Decision
from surd.review.outcome import TAKEDOWN_ACTOR
from surd.review.schema import items
from surd.settings import Settings
from surd.sources import REGISTRY, generation
from surd.stages.base import TAKEDOWN

REASON = TAKEDOWN
RAW = ("sample_id", "status", "reason", "source", "source_item_id", "source_url", "image_url")
BATCH = 4096


def normal_url(url: str | None) -> str | None:
    """A URL compared for takedowns: scheme and host in lower case, no fragment, no trailing '/'."""
    if not url:
        return None
    p = urlsplit(url.strip())
    return urlunsplit((p.scheme.lower(), p.netloc.lower(), p.path.rstrip("/"), p.query, ""))


@dataclass
class Matcher:
    """The takedowns in force, by what they name; each maps to the takedown's id."""

    samples: dict[str, int] = field(default_factory=dict)  # sample ids (from --sample and --item)
    creators: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, name casefolded)
    urls: dict[str, int] = field(default_factory=dict)  # normal_url
    ids: set[int] = field(default_factory=set)  # every takedown in force

    @classmethod
    def of(cls, entries: Iterable[Mapping[str, Any]]) -> Matcher:
        m = cls()
        for e in entries:
            kind, value, tid = e["kind"], e["value"], int(e["id"])
            m.ids.add(tid)
            if kind == "sample":
                m.samples.setdefault(value, tid)
            elif kind == "item":
                m.samples.setdefault(sample_id(e["source"], value), tid)
            elif kind == "creator":
                m.creators.setdefault((e["source"], value.casefold()), tid)
            elif kind == "url":
                m.urls.setdefault(normal_url(value) or value, tid)
        return m

    def __bool__(self) -> bool:
        return bool(self.samples or self.creators or self.urls)

    @property
    def needs_raw(self) -> bool:
        """Whether matching needs each item's raw row (a creator or URL), not only its id."""
        return bool(self.creators or self.urls)

    def match(self, row: Mapping[str, Any]) -> int | None:
        """The takedown covering a raw-item row (its id, source, URLs, creator), or None."""
        tid = self.samples.get(row.get("sample_id") or "")
        if tid is not None:
            return tid
        why = str(row.get("reason") or "")
        if row.get("status") == DROPPED and why.startswith(f"{REASON}:"):  # dropped (or scrubbed) by one
            tid = int(why.split(":", 1)[1]) if why.split(":", 1)[1].isdigit() else None
            if tid in self.ids:  # its URLs and metadata are gone: the reason says which takedown
                return tid
        for key in ("source_url", "image_url"):
            url = normal_url(row.get(key))
            if url and url in self.urls:
                return self.urls[url]
        source = row.get("source")
        if self.creators and source in REGISTRY and row.get("meta_json") is not None:
            creator = REGISTRY[source].generation(dict(row)).get("creator")
            if creator:
                return self.creators.get((source, str(creator).casefold()))
        return None


def load(settings: Settings) -> Matcher:
    """The takedowns in force, read from the review database."""
    engine = queue.connect(settings.review_database_url)
    try:
        return Matcher.of(log.entries(engine))
    finally:
        engine.dispose()


def covered(settings: Settings, data: DataDir) -> dict[str, int]:
    """{sample id: takedown id} of what the takedowns in force cover (`load`, then `resolve`)."""
    return resolve(load(settings), data)


def resolve(matcher: Matcher, data: DataDir) -> dict[str, int]:
    """{sample id: takedown id} of the stored items a takedown covers (with every id named by
    --sample or --item, stored or not). A creator or URL takedown reads the raw items' id, URL and
    metadata columns, a batch at a time; with none, nothing is read."""
    gone = dict(matcher.samples)
    if not matcher.needs_raw:
        return gone
    for part in data.table("raw_items").parts():
        for batch in pq.ParquetFile(part).iter_batches(batch_size=BATCH, columns=[*RAW, *generation.READS]):
            for row in batch.to_pylist():
                tid = matcher.match(row)
                if tid is not None:
                    gone.setdefault(row["sample_id"], tid)
    return gone


def reason(tid: int) -> str:
    return f"{REASON}:{tid}"


def drop_row(sid: str, tid: int) -> dict[str, Any]:
    """A stage's output row for a taken-down item: its id, dropped, and the takedown."""
    return {"sample_id": sid, "status": DROPPED, "reason": reason(tid)}


def scrub(data: DataDir, gone: Mapping[str, int], tables: Iterable[str]) -> dict[str, int]:
    """The stored content of taken-down items removed from `tables`: each row rewritten as a drop
    with `takedown:<id>` and its content (image bytes, prompts, URLs, caption, CLIP embedding)
    emptied, in place (storage.tables.PartTable.scrub); {table: rows rewritten}. The caller holds
    each table's write lock."""
    reasons = {sid: reason(tid) for sid, tid in gone.items()}
    return {name: n for name in tables if (n := data.table(name).scrub(reasons))}


def scrub_queue(settings: Settings, gone: Mapping[str, int]) -> int:
    """The review queue's copy of taken-down items' prompts and links emptied (the payload, and
    the prompts' search text with it; their decisions and the takedown's rejection stay); returns
    how many items."""
    if not gone:
        return 0
    engine = queue.connect(settings.review_database_url)
    try:
        ids, todo, nothing = sorted(gone), [], queue.searchable({})
        with reader(engine) as conn:
            for k in range(0, len(ids), 500):
                q = sa.select(items.c.sample_id, items.c.payload, items.c.prompts).where(
                    items.c.sample_id.in_(ids[k : k + 500])
                )
                todo += [
                    {"sid": sid, "emptied": json.dumps({"sample_id": sid})}
                    for sid, payload, prompts in conn.execute(q)
                    if json.loads(payload) != {"sample_id": sid} or prompts != nothing
                ]
        if todo:
            with engine.begin() as conn:
                update = items.update().where(items.c.sample_id == sa.bindparam("sid"))
                conn.execute(update.values(payload=sa.bindparam("emptied"), prompts=nothing), todo)
        return len(todo)
    finally:
        engine.dispose()


def enforce(settings: Settings, data: DataDir, matcher: Matcher | None = None) -> int:
    """Reject, as the takedown (actor `takedown:<id>`, reason `takedown`), every queued item a
    takedown covers and has not rejected yet, whatever stewards or a policy decided: the item
    leaves the review and every later release. A steward's lease on it ends. Returns how many."""
    matcher = matcher if matcher is not None else load(settings)
    if not matcher:
        return 0
    gone = resolve(matcher, data)
    engine = queue.connect(settings.review_database_url)
    try:
        todo = []
        ids = sorted(gone)
        with reader(engine) as conn:
            for k in range(0, len(ids), 500):
                q = sa.select(items.c.sample_id, items.c.final_actor).where(
                    items.c.sample_id.in_(ids[k : k + 500])
                )
                todo += [
                    sid for sid, actor in conn.execute(q) if not str(actor or "").startswith(TAKEDOWN_ACTOR)
                ]
        for sid in todo:
            queue.release_leases(engine, sample_id=sid)
        decisions = (
            {
                "sample_id": sid,
                "actor": f"{TAKEDOWN_ACTOR}{gone[sid]}",
                "actor_kind": ActorKind.AUTO,
                "decision": Decision.REJECT,
                "reason": REASON,
            }
            for sid in todo
        )
        return queue.decide_many(engine, decisions)
    finally:
        engine.dispose()
