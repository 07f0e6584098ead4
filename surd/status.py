"""Per-stage counts from the tables themselves: in = went on + dropped (by reason) + pending."""

from __future__ import annotations

from typing import Any

from storage.embeddings import EmbeddingStore
from storage.layout import DataDir
from storage.releases import manifest, releases
from storage.schemas import OK
from surd.review import outcome, queries, queue
from surd.settings import Settings
from surd.sources import SOURCES

CHAIN = [("raw_items", None), ("images", "raw_items"), ("captions", "images"), ("clip_scores", "captions")]


def _summary(data: DataDir, name: str) -> tuple[int, int, dict[str, int]]:
    ok = 0
    dropped: dict[str, int] = {}
    total = 0
    for row in data.table(name).iter_rows(["status", "reason"]):
        total += 1
        if row["status"] == OK:
            ok += 1
        else:
            key = str(row["reason"]).split(":")[0]
            dropped[key] = dropped.get(key, 0) + 1
    return total, ok, dropped


def status(settings: Settings, data: DataDir) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    kept: dict[str, int] = {}
    for name, upstream in CHAIN:
        total, ok, dropped = _summary(data, name)
        came_in = total if upstream is None else kept[upstream]
        stages[name] = {
            "in": came_in,
            "out": ok,
            "dropped": dropped,
            "pending": came_in - ok - sum(dropped.values()),
        }
        kept[name] = ok
    engine = queue.connect(settings.review_database_url)
    try:
        queued = len(queries.queued_ids(engine))
        standing = outcome.effective(engine)
    finally:
        engine.dispose()
    accepted = sum(1 for d in standing.values() if d["decision"] == "accept")
    rejected: dict[str, int] = {}
    for d in standing.values():
        if d["decision"] == "reject":
            key = f"rejected_by_{d['actor_kind']}:{d['reason']}"
            rejected[key] = rejected.get(key, 0) + 1
    stages["review"] = {
        "in": kept["clip_scores"],
        "out": accepted,
        "dropped": rejected,
        "pending": kept["clip_scores"] - accepted - sum(rejected.values()),
        "queued": queued,
    }

    rels = releases(data)
    latest = manifest(rels[-1]) if rels else None
    stages["release"] = {
        "in": accepted,
        "out": latest["rows"] if latest else 0,
        "dropped": {},
        "pending": accepted - (latest["rows"] if latest else 0),
        "latest": latest["release"] if latest else None,
    }
    emb: dict[str, Any] = {}
    if data.embeddings_dir.exists():
        released = set(latest["fingerprint"]) if latest else set()
        for emb_dir in sorted(p for p in data.embeddings_dir.iterdir() if p.is_dir()):
            store = EmbeddingStore(data, emb_dir.name)
            have = {sid for sid, _ in store.keys()}  # noqa: SIM118
            emb[emb_dir.name] = {
                "in": len(released),
                "out": len(released & have),
                "dropped": {},
                "pending": len(released - have),
            }
    stages["embeddings"] = emb
    runs = (
        sorted(p.name for p in data.runs_dir.iterdir() if not p.name.startswith("."))
        if data.runs_dir.exists()
        else []
    )
    stages["adapter_runs"] = runs
    failed_pages = sum(1 for r in data.table("crawl_pages").iter_rows(["status"]) if r["status"] != OK)
    crawls = {}
    for source in SOURCES:
        st = data.state(f"crawl-{source}")
        if st:
            crawls[source] = {
                k: st.get(k)
                for k in ("crawl_id", "done", "stop_reason", "robots", "incremental", "items", "last_failure")
            }
    return {
        "data_root": str(data.root),
        "stages": stages,
        "crawl_pages_failed": failed_pages,
        "crawls": crawls,
    }
