"""Each stage as one call over the settings, under its write lock; the flows and the CLI both
call these. The batch stages run through one call, `run`, by their registry name
(surd.stages.REGISTRY); the others (crawl, review, release) have their own."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from storage import locks
from storage.embeddings import EmbeddingStore
from storage.layout import DataDir
from storage.releases import list_published, manifest, publish, releases
from storage.tables import set_fault_hook
from surd.http.client import PoliteClient
from surd.review import queries, queue
from surd.settings import Settings
from surd.stages import stage_class
from surd.stages.base import Partition, run_stage
from surd.stages.crawl import CrawlFailed, crawl_source, politeness
from surd.stages.images import retryable
from surd.stages.release import create_release, storage_options
from surd.stages.review import apply_auto_policy, enqueue_kept
from surd.status import chain, status

Progress = Callable[[int], None] | None
log = logging.getLogger("surd")


@contextmanager
def writing(settings: Settings, name: str, part: Partition = None) -> Iterator[None]:
    """One writer at a time of `name` in this data root (storage.locks); a second one waits up
    to `lock_wait_s`, saying who holds it, then fails with that."""
    with locks.writing(Path(settings.data_root), name, settings.lock_wait_s, part, on_wait=log.warning):
        yield


def open_data(settings: Settings, create: bool = True) -> DataDir:
    """The settings' data root, checked (and created, unless `create` is False: readers)."""
    if settings.device == "cuda":
        from surd.models.device import device_for  # torch: only when a GPU is asked for

        device_for("cuda")  # no visible GPU: fail at start, naming the valid options
    data = DataDir(settings.data_root).open(create)
    if settings.fault_kill_at:
        table, _, n = settings.fault_kill_at.partition(":")

        def hook(name: str, written: int) -> None:
            if name == table and written >= int(n or 1):
                os.kill(os.getpid(), signal.SIGKILL)

        set_fault_hook(hook)
    return data


def pending_total(
    settings: Settings,
    stage: str,
    release_path: str | None = None,
    llm: str | None = None,
    reasons: list[str] | None = None,
) -> int:
    """How many items a run of `stage` has to do, known before it starts (for progress)."""
    data = open_data(settings)
    if stage == "embed":
        from surd.models.profiles import llm_model_id  # torch: only to embed
        from surd.stages.embed import embed_todo  # torch, transformers

        assert release_path is not None
        return len(embed_todo(EmbeddingStore(data, llm_model_id(settings, llm)), Path(release_path)))
    if stage == "images_retry":
        return len(retryable(data, reasons))
    return int(chain(data)[stage]["pending"])  # the table stages' counts: no review database


def crawl(
    settings: Settings,
    source: str,
    progress: Progress = None,
    full: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """One pass over a source (resuming an unfinished one); the client honours its robots policy.
    A pass that stops on a failure raises `CrawlFailed` once what it fetched is written. `sleep`
    is the client's politeness wait (the CLI shows it)."""
    data = open_data(settings)
    with writing(settings, "raw_items"), PoliteClient(politeness(settings, source), sleep=sleep) as client:
        stats = crawl_source(source, settings, data, client, progress=progress, full=full)
    if stats.failed:
        raise CrawlFailed([stats])
    return asdict(stats)


def run(
    settings: Settings, name: str, progress: Progress = None, part: Partition = None, **options: Any
) -> dict[str, Any]:
    """Batch stage `name` (surd.stages.REGISTRY) over what it has to do, under its write lock;
    `options` go to the stage's constructor. Returns its run summary (surd.stages.base.StageRun)."""
    data = open_data(settings)
    stage = stage_class(name)(settings, data, **options)
    with writing(settings, stage.lock, part):
        return vars(run_stage(stage, progress, part))


def images(
    settings: Settings, progress: Progress = None, submit: Any = None, workers: int | None = None
) -> dict[str, Any]:
    """The images stage; `submit`/`workers`: fetch and decode parts on a cluster (flows/scale.py)."""
    return run(settings, "images", progress, submit=submit, workers=workers)


def images_retry(
    settings: Settings, reasons: list[str] | None = None, progress: Progress = None
) -> dict[str, Any]:
    """Fetch again only the images that failed (by default for a transient reason)."""
    return run(settings, "images", progress, rows=retryable(open_data(settings), reasons))


def captions(settings: Settings, progress: Progress = None, part: Partition = None) -> dict[str, Any]:
    return run(settings, "captions", progress, part)


def clip_filter(settings: Settings, progress: Progress = None, part: Partition = None) -> dict[str, Any]:
    return run(settings, "clip_scores", progress, part)


def near_duplicates(settings: Settings, progress: Progress = None) -> dict[str, Any]:
    return run(settings, "near_duplicates", progress)


def review(settings: Settings) -> dict[str, Any]:
    """Group near duplicates among the CLIP-kept samples (the stage, first: the queue takes only
    what it kept), enqueue the rest and apply the auto-review policy; the queue's progress."""
    near = near_duplicates(settings)
    data = open_data(settings)
    out: dict[str, Any] = {
        "near_duplicates": {"processed": near["processed"], "kept": near["kept"], "dropped": near["dropped"]},
        "enqueued": enqueue_kept(settings, data),
        "auto_decided": apply_auto_policy(settings),
        "policy": settings.review.auto_policy,
    }
    engine = queue.connect(settings.review_database_url)
    try:
        out["queue"] = {**queries.progress(engine), "agreement": queries.agreement(engine)}
    finally:
        engine.dispose()
    return out


def release(settings: Settings) -> str | None:
    """Create a release if the accepted set changed; returns the latest release's path."""
    return release_info(settings)["path"]


def _release_counts(settings: Settings, data: DataDir) -> dict[str, int]:
    """What each stage kept, for a new release's manifest (counted only when one is written)."""
    st = status(settings, data)["stages"]
    counts = {k: st[k]["out"] for k in ("raw_items", "images", "captions", "clip_scores", "near_duplicates")}
    near = st["near_duplicates"]["dropped"].get("near_duplicate_of", 0)
    return counts | {"near_duplicates_dropped": near, "accepted": st["review"]["out"]}


def release_info(settings: Settings) -> dict[str, Any]:
    """Create a release if the accepted set changed (and publish it where settings say); returns
    the latest release: path, whether it is new, its rows and counts, and where it was published."""
    data = open_data(settings)
    with writing(settings, "release"):  # versions stay distinct; no live writer's temp is removed
        created = create_release(settings, data, lambda: _release_counts(settings, data))
    existing = releases(data)
    if not existing:
        return {"path": None, "created": False}
    latest = existing[-1]
    man = manifest(latest)
    info: dict[str, Any] = {
        "path": str(latest),
        "created": created is not None,
        "release": man["release"],
        "rows": man["rows"],
        "counts": man["counts"],
        "published": None,
    }
    if settings.release.location:
        opts = storage_options(settings)
        if created is not None or latest.name not in list_published(settings.release.location, **opts):
            publish(latest, settings.release.location, **opts)
        info["published"] = f"{settings.release.location.rstrip('/')}/{latest.name}"
    return info


def embed(
    settings: Settings,
    release_path: str,
    llm: str | None = None,
    progress: Progress = None,
    part: Partition = None,
) -> dict[str, Any]:
    """Embed the release's simple prompts not yet embedded for this LLM (one process per device
    with `embed.workers` > 1); returns how many and the LLM's model id."""
    from surd.stages.embed import EmbedStage, run_embed  # torch and transformers: only to embed

    data = open_data(settings)
    stage = EmbedStage(settings, data, Path(release_path), llm)
    with writing(settings, stage.lock, part):
        n, model_id = run_embed(settings, data, Path(release_path), llm, progress, part)
    return {"embedded": n, "model_id": model_id}
