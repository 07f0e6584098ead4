"""The `rebuild` flow: every stage of the data path, then embeddings, training and evaluation."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event

from flows import scale
from flows.training import embed_flow, evaluate_flow, train_flow
from surd import pipeline
from surd.progress import Meter, ProgressLog
from surd.review.queries import progress_markdown
from surd.settings import Settings, load_settings
from surd.stages.crawl import CrawlFailed, CrawlStats
from surd.status import status

PROGRESS_LOG_S = float(os.environ.get("SURD_PROGRESS_EVERY", "10"))  # seconds between log lines


def _settings(config: dict[str, Any]) -> Settings:
    return load_settings(**config)


@task(retries=2, retry_delay_seconds=5, task_run_name="crawl-{source}")
def crawl_task(config: dict[str, Any], source: str) -> dict[str, Any]:
    # one crawler per site across all deployments and workers, when the global concurrency
    # limit `crawl-<source>` exists (created by the production set-up); without it, no wait
    with concurrency(f"crawl-{source}", occupy=1):
        return pipeline.crawl(_settings(config), source)


def _with_progress(settings: Settings, stage: str, run: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Run a stage with a progress artifact (share of the items pending when it started, updated
    at most once a second) and a progress line in the run's log every `PROGRESS_LOG_S`."""
    todo = pipeline.pending_total(settings, stage)
    if not todo:
        return run(settings)
    artifact = cast(UUID, create_progress_artifact(progress=0.0, key=f"{stage.replace('_', '-')}-progress"))
    meter = Meter(stage, todo)
    last = 0.0

    def advance(n: int) -> None:
        nonlocal last
        meter.advance(n)
        if time.monotonic() - last >= 1.0 or meter.done >= todo:
            last = time.monotonic()
            update_progress_artifact(artifact, progress=min(100.0, 100.0 * meter.done / todo))

    with ProgressLog(meter, get_run_logger().info, PROGRESS_LOG_S):
        return run(settings, progress=advance)


@task(retries=2, retry_delay_seconds=5)
def images_task(config: dict[str, Any]) -> dict[str, Any]:
    return _with_progress(_settings(config), "images", pipeline.images)


@task(retries=1)
def captions_task(config: dict[str, Any]) -> dict[str, Any]:
    return _with_progress(_settings(config), "captions", pipeline.captions)


@task(retries=1)
def clip_task(config: dict[str, Any]) -> dict[str, Any]:
    return _with_progress(_settings(config), "clip_scores", pipeline.clip_filter)


@task
def review_task(config: dict[str, Any]) -> dict[str, Any]:
    """Enqueue and move on: stewards decide at their pace; the release takes what is decided."""
    out = pipeline.review(_settings(config))
    create_markdown_artifact(
        key="review-queue",
        markdown=progress_markdown(out["queue"]),
        description=f"review queue after this run ({out['enqueued']} enqueued)",
    )
    return out


def release_limit(settings: Settings) -> str:
    """The Prefect concurrency limit of releasing one data root (created by `surd deploy setup`)."""
    return "release-" + hashlib.sha1(str(Path(settings.data_root).resolve()).encode()).hexdigest()[:12]


@task
def release_task(config: dict[str, Any]) -> dict[str, Any]:
    settings = _settings(config)
    with concurrency(release_limit(settings), occupy=1):  # without the limit: no wait
        info = pipeline.release_info(settings)
    if info["created"]:  # a deployment trigger on this event starts training on the new release
        emit_event(
            event="surd.release.published",
            resource={"prefect.resource.id": f"surd.release.{info['release']}"},
            payload={
                "release": info["release"],
                "path": info["path"],
                "rows": info["rows"],
                "counts": info["counts"],
                "published": info["published"],
            },
        )
    return info


@task
def status_task(config: dict[str, Any]) -> dict[str, Any]:

    settings = _settings(config)
    return status(settings, pipeline.open_data(settings))


@flow(name="release")
def release_flow(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Release what stewards have decided since the last release (nothing if unchanged)."""
    return release_task(config or {})


@flow(name="rebuild")
def rebuild(config: dict[str, Any] | None = None, train: bool = True) -> dict[str, Any]:
    """Crawl → images → captions → CLIP → review queue → release → embeddings → adapter."""
    config = config or {}
    log = get_run_logger()
    settings = _settings(config)
    out: dict[str, Any] = {}
    failed: list[Any] = []
    for source in settings.sources.enabled:
        state = crawl_task(config, source, return_state=True)  # a site down: the rest goes on
        if state.is_completed():
            out[f"crawl_{source}"] = state.result()
        else:
            exc = state.result(raise_on_failure=False)
            failed.extend(exc.failed if isinstance(exc, CrawlFailed) else [exc])
            log.error("%s", exc)
    if settings.scale.enabled:  # parts and partitions on Dask workers (flows/scale.py)
        out["images"] = scale.run_images(config, settings)
        out["captions"] = scale.run(config, settings, "captions")
        out["clip_scores"] = scale.run(config, settings, "clip_scores")
    else:
        out["images"] = images_task(config)
        out["captions"] = captions_task(config)
        out["clip_scores"] = clip_task(config)
    out["review"] = review_task(config)
    release = release_task(config)["path"]
    out["release"] = release
    if release and train:  # in production these run as their own deployments, on events
        out["embed"] = embed_flow(release, config=config)
        out["train"] = train_flow(release, out["embed"]["model_id"], config=config)
        out["evaluate"] = evaluate_flow(out["train"]["run_dir"], config=config)
    st = status_task(config)
    rows = [
        {
            "stage": k,
            "in": v["in"],
            "out": v["out"],
            "pending": v["pending"],
            "dropped": ", ".join(f"{r}={n}" for r, n in sorted(v["dropped"].items())),
        }
        for k, v in st["stages"].items()
        if isinstance(v, dict) and "in" in v
    ]
    create_table_artifact(key="rebuild-counts", table=rows, description="items per stage")
    log.info("rebuild finished: release %s", release)
    out["status"] = st
    if failed:  # the stages ran over what there is, but the run is not a success
        if all(isinstance(f, CrawlStats) for f in failed):
            raise CrawlFailed(failed)
        raise RuntimeError("; ".join(map(str, failed)))
    return out
