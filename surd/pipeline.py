"""Each stage as one call over the settings, under its write lock; the flows and the CLI both
call these. The batch stages run through one call, `run`, by their name in the pipeline's
declaration (surd.chain), or all in order through `run_all`; the others (crawl, review, release,
embeddings) have their own. Every call returns a typed summary (a dataclass)."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage import locks
from storage.embeddings import EmbeddingStore
from storage.layout import DataDir
from storage.outbox import Entry, Outbox
from storage.releases import (
    APPROVAL,
    held,
    list_published,
    manifest,
    publish,
    published,
    quarantine,
    releases,
)
from storage.tables import atomic_write_bytes, set_fault_hook, sweep_temp
from surd import chain
from surd.http.client import PoliteClient
from surd.review import queries, queue, takedowns
from surd.settings import Settings
from surd.stages import recheck as recheck_stage
from surd.stages import takedown
from surd.stages.base import Partition, StageRun, run_stage
from surd.stages.crawl import CrawlFailed, CrawlStats, crawl_source, politeness
from surd.stages.images import retryable
from surd.stages.recheck import RecheckRun
from surd.stages.release import create_release, storage_options
from surd.stages.review import apply_auto_policy, enqueue_kept, withdraw
from surd.status import status

Progress = Callable[[int], None] | None
TABLES_OF_LOCK = {"raw_items": ("raw_items", "crawl_pages")}  # a lock whose holder writes several tables
log = logging.getLogger("surd")


@contextmanager
def writing(settings: Settings, name: str, part: Partition = None) -> Iterator[None]:
    """One writer at a time of `name` in this data root (storage.locks); a second one waits up
    to `lock_wait_s`, saying who holds it, then fails with that. The whole table's writer (not a
    partition, whose siblings write beside it) first removes the temp files a killed writer left."""
    root = Path(settings.data_root)
    with locks.writing(root, name, settings.lock_wait_s, part, on_wait=log.warning):
        if part is None:
            for table in TABLES_OF_LOCK.get(name, (name,)):
                if n := sweep_temp(root / "tables" / table):
                    log.info("removed %d temp file(s) a killed writer left in table %s", n, table)
        yield


def open_data(settings: Settings, create: bool = True) -> DataDir:
    """The settings' data root, checked (and created, unless `create` is False: readers)."""
    if settings.device == "cuda":
        from surd.models.device import device_for  # torch: only when a GPU is asked for

        device_for("cuda")  # no visible GPU: fail at start, naming the valid options
    data = chain.PIPELINE.data_dir(settings.data_root).open(create)
    if settings.fault_kill_at:
        table, _, n = settings.fault_kill_at.partition(":")

        def hook(name: str, written: int) -> None:
            if name == table and written >= int(n or 1):
                os.kill(os.getpid(), signal.SIGKILL)

        set_fault_hook(hook)
    return data


def pending_total(settings: Settings, stage: str) -> int:
    """How many items a run of declared stage `stage` has to do, known before it starts (for
    progress): its input's kept samples not yet in its table (no review database needed)."""
    return chain.PIPELINE.counts(open_data(settings))[stage].pending


def retry_total(settings: Settings, reasons: list[str] | None = None) -> int:
    """How many failed images a retry fetches again."""
    return len(retryable(open_data(settings), reasons))


def embed_total(settings: Settings, release_path: str, llm: str | None = None) -> int:
    """How many of a release's prompts are not embedded yet for this LLM."""
    from surd.models.profiles import llm_model_id  # torch: only to embed
    from surd.stages.embed import embed_todo  # torch, transformers

    data = open_data(settings)
    return len(embed_todo(EmbeddingStore(data, llm_model_id(settings, llm)), Path(release_path)))


def crawl(
    settings: Settings,
    source: str,
    progress: Progress = None,
    full: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> CrawlStats:
    """One pass over a source (resuming an unfinished one); the client honours its robots policy.
    A pass that stops on a failure raises `CrawlFailed` once what it fetched is written. `sleep`
    is the client's politeness wait (the CLI shows it)."""
    data = open_data(settings)
    with writing(settings, "raw_items"), PoliteClient(politeness(settings, source), sleep=sleep) as client:
        stats = crawl_source(source, settings, data, client, progress=progress, full=full)
    if stats.failed:
        raise CrawlFailed([stats])
    return stats


def run(
    settings: Settings, name: str, progress: Progress = None, part: Partition = None, **options: Any
) -> StageRun:
    """Batch stage `name` (surd.chain.PIPELINE) over what it has to do, under its write lock;
    `options` go to the stage's constructor. The takedowns in force are read only when there is
    work, and the stage drops the items they cover."""
    data = open_data(settings)
    stage = chain.PIPELINE.build(name, settings, data, **options)
    with writing(settings, stage.lock, part):
        return run_stage(stage, progress, part, taken_down=lambda: takedown.covered(settings, data))


def run_all(settings: Settings, log: Callable[[StageRun], None] | None = None) -> list[StageRun]:
    """Every declared batch stage in order, in this process (a site's crawl comes before)."""
    runs = []
    for stage in chain.PIPELINE:
        runs.append(run(settings, stage.name))
        if log is not None:
            log(runs[-1])
    return runs


def images(
    settings: Settings, progress: Progress = None, submit: Any = None, workers: int | None = None
) -> StageRun:
    """The images stage; `submit`/`workers`: fetch and decode parts on a cluster (flows/scale.py)."""
    return run(settings, "images", progress, submit=submit, workers=workers)


def images_retry(settings: Settings, reasons: list[str] | None = None, progress: Progress = None) -> StageRun:
    """Fetch again only the images that failed (by default for a transient reason)."""
    return run(settings, "images", progress, rows=retryable(open_data(settings), reasons))


@dataclass
class ReviewRun:
    """What one review step did: samples queued, withdrawn and decided by policy; the queue."""

    enqueued: int
    withdrawn: int
    auto_decided: int
    policy: str
    waiting: dict[str, int] = field(default_factory=dict)  # pending in a stage before review
    scrubbed: dict[str, int] = field(default_factory=dict)  # rows of taken-down items emptied, by table
    queue: dict[str, Any] = field(default_factory=dict)


def scrub_takedowns(settings: Settings) -> dict[str, int]:
    """Remove taken-down items' stored content from every table (and the review queue's copy),
    each table under its write lock; {table: rows rewritten}. Nothing to do: nothing rewritten."""
    data = open_data(settings)
    gone = takedown.covered(settings, data)
    out: dict[str, int] = {}
    if not gone:
        return out
    for name in chain.PIPELINE.tables:
        with writing(settings, name):
            out |= takedown.scrub(data, gone, [name])
    if n := takedown.scrub_queue(settings, gone):
        out["review_queue"] = n
    return out


def review(settings: Settings) -> ReviewRun:
    """Queue what went on through every declared stage, withdraw queued items a stage dropped
    since (a stage added to the pipeline), apply the auto-review policy; the queue's progress.
    It runs no stage: `waiting` says how many items each stage still has to do."""
    data = open_data(settings)
    counts = chain.PIPELINE.counts(data)
    went_on = chain.PIPELINE.went_on(data)
    enqueued = enqueue_kept(settings, data, went_on)
    withdrawn = withdraw(settings, data, went_on)
    out = ReviewRun(
        enqueued=enqueued,
        withdrawn=withdrawn,
        scrubbed=scrub_takedowns(settings),  # finishes a takedown's removal a kill interrupted
        auto_decided=apply_auto_policy(settings),
        policy=settings.review.auto_policy,
        waiting={k: c.pending for k, c in counts.items() if c.pending},
    )
    engine = queue.connect(settings.review_database_url)
    try:
        out.queue = {**queries.progress(engine), "agreement": queries.agreement(engine)}
    finally:
        engine.dispose()
    return out


@dataclass
class ReleaseInfo:
    """The latest release after a release step: whether this step made it, and where it is."""

    path: str | None = None
    created: bool = False
    release: str | None = None
    rows: int = 0
    counts: dict[str, Any] = field(default_factory=dict)
    published: str | None = None
    announced: list[str] = field(default_factory=list)  # releases announced (surd.release.published)
    waiting: list[str] = field(default_factory=list)  # releases whose announcement waits (the outbox)
    quarantined: list[str] = field(default_factory=list)  # folders without a manifest, moved aside
    held: dict[str, list[str]] = field(default_factory=dict)  # releases the gate holds, and why


@dataclass
class EmbedRun:
    """How many of a release's prompts one embedding run embedded, and with which LLM."""

    embedded: int
    model_id: str


def release(settings: Settings) -> str | None:
    """Create a release if the accepted set changed; returns the latest published release's path
    (a release the gate holds is not one until approved)."""
    return release_info(settings).path


def _release_counts(settings: Settings, data: DataDir) -> dict[str, int]:
    """What each stage kept, for a new release's manifest (counted only when one is written)."""
    st = status(settings, data)["stages"]
    counts = {k: st[k]["out"] for k in chain.PIPELINE.tables}
    near = st.get("near_duplicates", {}).get("dropped", {}).get("near_duplicate_of", 0)
    return counts | {"near_duplicates_dropped": near, "accepted": st["review"]["out"]}


def release_info(settings: Settings) -> ReleaseInfo:
    """Create a release if the accepted set changed (and publish it where settings say); returns
    the latest release: path, whether it is new, its rows and counts, and where it was published."""
    data = open_data(settings)
    with writing(settings, "release"):  # versions stay distinct; no live writer's temp is removed
        moved = quarantine(data)  # a `vNNNN/` without a manifest is not a release, and in the way
        for m in moved:
            log.warning("release folder %s had no manifest.json: moved aside; look inside, then delete it", m)
        created = create_release(settings, data, lambda: _release_counts(settings, data))
    waiting = {e.release for e in Outbox(data.root).pending()}
    holding = {p.name: manifest(p)["held"]["reasons"] for p in releases(data) if held(p)}
    for version, why in holding.items():
        if created is not None and created.name == version:
            log.warning(
                "release %s is held, not published: %s (surd release approve)", version, "; ".join(why)
            )
    existing = published(data)
    if not existing:
        return ReleaseInfo(created=created is not None, quarantined=moved, held=holding)
    latest = existing[-1]
    man = manifest(latest)
    info = ReleaseInfo(str(latest), created is not None, man["release"], man["rows"], man["counts"])
    info.quarantined, info.held = moved, holding
    info.waiting = sorted(waiting)
    if settings.release.location:
        opts = storage_options(settings)
        if created is not None or latest.name not in list_published(settings.release.location, **opts):
            publish(latest, settings.release.location, **opts)
        info.published = f"{settings.release.location.rstrip('/')}/{latest.name}"
    return info


def approve(settings: Settings, version: str, reason: str, actor: str) -> ReleaseInfo:
    """Let a held release out: the approval is logged (review database) and written into its
    folder, it is recorded for announcing once (storage.outbox) and published where settings say."""
    data = open_data(settings, create=False)
    path = data.releases_dir / version
    if not (path / "manifest.json").exists():
        raise LookupError(f"no release {version} in {data.releases_dir}")
    if not held(path):
        raise ValueError(f"release {version} is not held: it is out already")
    man = manifest(path)
    with writing(settings, "release"):
        engine = queue.connect(settings.review_database_url)
        try:
            takedowns.record_approval(engine, version, man["held"]["reasons"], reason, actor)
        finally:
            engine.dispose()
        at = datetime.now(UTC).isoformat()
        Outbox(data.root).record(Entry(version, man["inputs"], at))
        atomic_write_bytes(path / APPROVAL, json.dumps({"by": actor, "reason": reason, "at": at}).encode())
    return release_info(settings)


def recheck(settings: Settings, budget: int | None = None) -> RecheckRun:
    """Re-check the next items of the latest published release at their sources (polite, within
    `release.recheck.budget`); items gone for good leave the next release."""
    data = open_data(settings)
    out = published(data)
    if not out:
        return RecheckRun()
    with writing(settings, recheck_stage.TABLE):
        return recheck_stage.recheck(settings, data, out[-1], budget)


def embed(
    settings: Settings,
    release_path: str,
    llm: str | None = None,
    progress: Progress = None,
    part: Partition = None,
) -> EmbedRun:
    """Embed the release's simple prompts not yet embedded for this LLM (one process per device
    with `embed.workers` > 1); returns how many and the LLM's model id."""
    from surd.stages.embed import EmbedStage, run_embed  # torch and transformers: only to embed

    data = open_data(settings)
    stage = EmbedStage(settings, data, Path(release_path), llm)
    with writing(settings, stage.lock, part):
        n, model_id = run_embed(settings, data, Path(release_path), llm, progress, part)
    return EmbedRun(n, model_id)
