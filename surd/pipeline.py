"""Each stage as one call over the settings; the flows and the CLI both call these."""

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

from storage.layout import DataDir
from storage.locks import writing
from storage.tables import set_fault_hook
from surd.crawl import CrawlFailed, crawl_source, politeness
from surd.http import PoliteClient
from surd.settings import Settings
from surd.stage import Partition
from surd.summary import describe, describe_crawl

Progress = Callable[[int], None] | None
log = logging.getLogger("surd")


@contextmanager
def _writing(settings: Settings, name: str, part: Partition = None) -> Iterator[None]:
    """One writer at a time of `name` in this data root (storage.locks); a second one waits up
    to `lock_wait_s`, saying who holds it, then fails with that."""
    with writing(Path(settings.data_root), name, settings.lock_wait_s, part, on_wait=log.warning):
        yield


def open_data(settings: Settings, create: bool = True) -> DataDir:
    """The settings' data root, checked (and created, unless `create` is False: readers)."""
    if settings.device == "cuda":
        from surd.models.tiny import device_for

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
    from surd.status import status

    data = open_data(settings)
    if stage == "embed":
        from surd.embed import EmbeddingStore, embed_todo
        from surd.models.profiles import llm_model_id

        assert release_path is not None
        return len(embed_todo(EmbeddingStore(data, llm_model_id(settings, llm)), Path(release_path)))
    if stage == "images_retry":
        from surd.images import retryable

        return len(retryable(data, reasons))
    return int(status(settings, data)["stages"][stage]["pending"])


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
    with _writing(settings, "raw_items"), PoliteClient(politeness(settings, source), sleep=sleep) as client:
        stats = crawl_source(source, settings, data, client, progress=progress, full=full)
    if stats.failed:
        raise CrawlFailed([stats])
    return asdict(stats)


def images(
    settings: Settings, progress: Progress = None, submit: Any = None, workers: int | None = None
) -> dict[str, Any]:
    """The images stage; `submit`/`workers`: fetch and decode parts on a cluster (flows/scale.py)."""
    from surd.images import run_images

    data = open_data(settings)
    with _writing(settings, "images"):
        return vars(run_images(settings, data, progress, submit=submit, workers=workers))


def images_retry(
    settings: Settings, reasons: list[str] | None = None, progress: Progress = None
) -> dict[str, Any]:
    from surd.images import retry_failed

    data = open_data(settings)
    with _writing(settings, "images"):
        return vars(retry_failed(settings, data, reasons, progress))


def captions(settings: Settings, progress: Progress = None, part: Partition = None) -> dict[str, Any]:
    from surd.caption import run_captions

    data = open_data(settings)
    with _writing(settings, "captions", part):
        return vars(run_captions(settings, data, progress, part))


def clip_filter(settings: Settings, progress: Progress = None, part: Partition = None) -> dict[str, Any]:
    from surd.clipfilter import run_clip_filter

    data = open_data(settings)
    with _writing(settings, "clip_scores", part):
        return vars(run_clip_filter(settings, data, progress, part))


def review(settings: Settings) -> dict[str, Any]:
    from surd.review import queue
    from surd.review.stage import apply_auto_policy, enqueue_kept

    data = open_data(settings)
    out: dict[str, Any] = {
        "enqueued": enqueue_kept(settings, data),
        "auto_decided": apply_auto_policy(settings),
        "policy": settings.review.auto_policy,
    }
    engine = queue.connect(settings.review_database_url)
    try:
        out["queue"] = {**queue.progress(engine), "agreement": queue.agreement(engine)}
    finally:
        engine.dispose()
    return out


def release(settings: Settings) -> str | None:
    """Create a release if the accepted set changed; returns the latest release's path."""
    return release_info(settings)["path"]


def release_info(settings: Settings) -> dict[str, Any]:
    """Create a release if the accepted set changed (and publish it where settings say); returns
    the latest release: path, whether it is new, its rows and counts, and where it was published."""
    from storage.releases import list_published, publish
    from surd import release as rel
    from surd.status import status

    data = open_data(settings)
    with _writing(settings, "release"):  # versions stay distinct; no live writer's temp is removed
        st = status(settings, data)["stages"]
        counts = {k: st[k]["out"] for k in ("raw_items", "images", "captions", "clip_scores")}
        counts["accepted"] = st["review"]["out"]
        created = rel.create_release(settings, data, counts)
    existing = rel.releases(data)
    if not existing:
        return {"path": None, "created": False}
    latest = existing[-1]
    man = rel.manifest(latest)
    info: dict[str, Any] = {
        "path": str(latest),
        "created": created is not None,
        "release": man["release"],
        "rows": man["rows"],
        "counts": man["counts"],
        "published": None,
    }
    if settings.release.location:
        opts = rel.storage_options(settings)
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
    from surd.embed import EmbeddingStore, run_embed
    from surd.models.profiles import llm_model_id

    data = open_data(settings)
    with _writing(settings, f"embeddings-{EmbeddingStore(data, llm_model_id(settings, llm)).dir.name}", part):
        n, model_id = run_embed(settings, data, Path(release_path), llm, progress, part)
    return {"embedded": n, "model_id": model_id}


def train(
    settings: Settings,
    release_path: str,
    llm_model_id: str,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    from surd.adapter_stage import run_dir, run_train

    data = open_data(settings)
    run = run_dir(data, Path(release_path), llm_model_id, settings)
    with _writing(settings, f"run-{run.name}"):  # its checkpoints, and the stale temp cleanup
        return run_train(settings, data, Path(release_path), llm_model_id, log=log)


def evaluate(
    settings: Settings, run_dir: str, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    from surd.adapter_stage import run_evaluate

    data = open_data(settings)
    with _writing(settings, f"run-{Path(run_dir).name}"):  # its eval/ folder
        return run_evaluate(settings, data, Path(run_dir), progress=progress)


def rebuild(
    settings: Settings, train_adapter: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The whole path in-process, without an orchestrator (the flow runs the same calls)."""
    out: dict[str, Any] = {}
    failed: list[Any] = []
    for source in settings.sources.enabled:
        try:
            out[f"crawl_{source}"] = crawl(settings, source)
            log(describe_crawl(out[f"crawl_{source}"]))
        except CrawlFailed as exc:  # the other sources and the stages go on over what is there
            failed.extend(exc.failed)
            log(str(exc))
    for name, fn in (("images", images), ("captions", captions), ("clip_scores", clip_filter)):
        out[name] = fn(settings)
        log(describe(name, out[name]))
    out["review"] = review(settings)
    log(describe("review", out["review"]))
    rel = release(settings)
    out["release"] = rel
    if rel and train_adapter:
        out["embed"] = embed(settings, rel)
        out["train"] = train(settings, rel, out["embed"]["model_id"])
        out["evaluate"] = evaluate(settings, out["train"]["run_dir"])
    if failed:  # after the rest ran: a rebuild with a site down is not a success
        raise CrawlFailed(failed)
    return out
