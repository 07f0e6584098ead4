"""Per-stage counts from the tables themselves: in = went on + dropped (by reason) + pending.

The stages and their order are the pipeline's declaration's (surd.chain); each stage counts only
its rows for the samples its input passes now (storage.funnel), the others apart as `outside`
(a stage added before it, or a later drop upstream), so the counts add up at any time."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from storage.embeddings import EmbeddingStore
from storage.layout import DataDir
from storage.releases import manifest, releases
from storage.schemas import OK
from surd import chain as declared
from surd.review import queries
from surd.review.db import NoDatabase, open_reader
from surd.review.kinds import Decision, State
from surd.settings import Settings
from surd.sources import SOURCES
from surd.stages import recheck


def _failed_pages(data: DataDir) -> int:
    parts = [str(p) for p in data.table("crawl_pages").parts()]
    if not parts:
        return 0
    con = duckdb.connect()
    try:
        row = con.execute("select count(*) from read_parquet(?) where status is distinct from ?", [parts, OK])
        return int(row.fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def chain(data: DataDir) -> dict[str, dict[str, Any]]:
    """The counts of the declared table stages (raw items to the last); no review database needed."""
    return {name: c.as_dict() for name, c in declared.PIPELINE.counts(data).items()}


def review_stage(states: pa.Table, went_on: pa.Array) -> dict[str, Any]:
    """The review's counts against what went on through the pipeline: queued, accepted, rejected
    (by `rejected_by_<actor kind>:<reason>`); queued items outside it (withdrawn, or waiting for a
    stage added since) apart, as `outside`."""
    inside = pc.is_in(states.column("sample_id"), value_set=went_on)
    mine = states.filter(inside)
    final = pc.fill_null(pc.equal(mine.column("state"), State.FINAL.value), False)
    decided = mine.filter(final)
    accepted = int(pc.sum(pc.equal(decided.column("final_decision"), Decision.ACCEPT.value)).as_py() or 0)
    rejected: dict[str, int] = {}
    rej = decided.filter(pc.equal(decided.column("final_decision"), Decision.REJECT.value))
    for kind, reason in zip(
        rej.column("final_actor_kind").to_pylist(), rej.column("final_reason").to_pylist(), strict=True
    ):
        key = f"rejected_by_{kind}:{reason}"
        rejected[key] = rejected.get(key, 0) + 1
    came_in = len(went_on)
    return {
        "in": came_in,
        "out": accepted,
        "dropped": dict(sorted(rejected.items())),
        "pending": came_in - accepted - sum(rejected.values()),
        "queued": len(mine),
        "outside": len(states) - len(mine),
    }


def status(settings: Settings, data: DataDir) -> dict[str, Any]:
    stages: dict[str, Any] = chain(data)
    try:  # a reader: never creates, migrates or writes the review database
        engine = open_reader(settings.review_database_url)
    except NoDatabase:
        states = queries.STATES.empty_table()
    else:
        try:
            states = queries.states(engine)
        finally:
            engine.dispose()
    stages["review"] = review_stage(states, declared.PIPELINE.went_on(data))
    accepted = stages["review"]["out"]

    rels = releases(data)
    latest = manifest(rels[-1]) if rels else None
    held = {k: len(v) for k, v in latest.get("held_back", {}).items()} if latest else {}
    stages["release"] = {
        "in": accepted,
        "out": latest["rows"] if latest else 0,
        "dropped": held,  # past release.max_per_prompt_group
        "pending": accepted - (latest["rows"] if latest else 0) - sum(held.values()),
        "latest": latest["release"] if latest else None,
        "prompt_groups": latest.get("prompt_groups") if latest else None,
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
    failed_pages = _failed_pages(data)
    crawls = {}
    for source in SOURCES:
        st = data.state(f"crawl-{source}")
        if st:
            crawls[source] = {
                k: st.get(k)
                for k in (
                    "crawl_id",
                    "done",
                    "stop_reason",
                    "robots",
                    "incremental",
                    "items",
                    "last_failure",
                    "down_since",
                    "region_blocked",
                    "sfw_only",
                    "seen",
                )
            }
    return {
        "data_root": str(data.root),
        "stages": stages,
        "crawl_pages_failed": failed_pages,
        "crawls": crawls,
        "source_removed": len(recheck.removed(data)),  # released items found deleted at their source
        "recheck": data.state("recheck") or None,
    }
