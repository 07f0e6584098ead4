"""The `rebuild` flow: the crawls, every declared batch stage in order (surd.chain), the review
queue and a release, then (when asked) embeddings, training and evaluation.

Each declared stage names the work pool it needs. A rebuild run by its deployment (on the `cpu`
pool) runs the stages of its own pool as tasks and hands each run of consecutive stages of another
pool (captions, CLIP, the NSFW score and near duplicates: `gpu`) to the `stages/<pool>`
deployment with `run_deployment`, waiting for it: the order of the chain and the one rebuild run
(with its sub-runs) stay visible in one place, a failure there fails the rebuild, and a GPU
worker takes the four stages in one run. A rebuild called directly (the demo, `surd rebuild` without a
server's deployments) runs every stage in its own process."""

from __future__ import annotations

import hashlib
import os
import socket
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
from prefect.runtime import deployment

from flows import events, scale
from flows.training import embed_flow, evaluate_flow, train_flow
from surd import chain, pipeline
from surd.config import load_settings
from surd.pipeline import ReleaseInfo, ReviewRun
from surd.progress import Meter, ProgressLog
from surd.review.queries import progress_markdown
from surd.settings import Settings
from surd.stages.base import StageRun
from surd.stages.crawl import CrawlFailed, CrawlStats
from surd.stages.recheck import RecheckRun
from surd.status import status

HOME_POOL = "cpu"  # the work pool of the rebuild's own deployment (flows/deployments.PLAN)
PROGRESS_LOG_S = float(os.environ.get("SURD_PROGRESS_EVERY", "10"))  # seconds between log lines


def _settings(config: dict[str, Any]) -> Settings:
    return load_settings(**config)


@task(retries=2, retry_delay_seconds=5, task_run_name="crawl-{source}")
def crawl_task(config: dict[str, Any], source: str) -> CrawlStats:
    # one crawler per site across all deployments and workers, when the global concurrency
    # limit `crawl-<source>` exists (created by the production set-up); without it, no wait
    with concurrency(f"crawl-{source}", occupy=1):
        return pipeline.crawl(_settings(config), source)


def _with_progress(settings: Settings, stage: str, run: Callable[..., StageRun]) -> StageRun:
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


def run_stage(config: dict[str, Any], name: str) -> StageRun:
    """One declared stage: on the Dask cluster of the settings when scaled out and the stage can
    be spread, else as a task with a progress artifact."""
    settings = _settings(config)
    stage = chain.PIPELINE.stage_class(name)
    if settings.scale.enabled and stage.scale != "one":  # parts or partitions on Dask workers
        return scale.run(config, settings, name)
    fn = stage_task.with_options(retries=stage.retries, retry_delay_seconds=5, task_run_name=name)
    return fn(config, name)  # type: ignore[no-any-return]


@task
def stage_task(config: dict[str, Any], name: str) -> StageRun:
    settings = _settings(config)
    return _with_progress(settings, name, lambda s, progress=None: pipeline.run(s, name, progress))


@flow(name="stages")
def stages_flow(names: list[str], config: dict[str, Any] | None = None) -> dict[str, StageRun]:
    """Declared stages, in the order given, on the worker that runs this flow (its pool's)."""
    pool = os.environ.get("SURD_POOL") or "-"
    get_run_logger().info("stages %s on pool %s (host %s)", ", ".join(names), pool, socket.gethostname())
    return {n: run_stage(config or {}, n) for n in names}


def by_pool(names: list[str]) -> list[tuple[str, list[str]]]:
    """Consecutive declared stages grouped by the pool each needs, in order."""
    groups: list[tuple[str, list[str]]] = []
    for name in names:
        pool = chain.PIPELINE.stage_class(name).pool
        if groups and groups[-1][0] == pool:
            groups[-1][1].append(name)
        else:
            groups.append((pool, [name]))
    return groups


def run_declared(config: dict[str, Any], home: str | None) -> dict[str, Any]:
    """Every declared stage in order; with `home` (the pool this rebuild runs on, when run by a
    deployment), the groups of another pool go to that pool's `stages` deployment and are waited
    for. Returns each stage's summary (or, for a routed group, the sub-run's id and pool)."""
    out: dict[str, Any] = {}
    for pool, names in by_pool(chain.PIPELINE.names()):
        if home is None or pool == home:
            for name in names:
                out[name] = run_stage(config, name)
            continue
        from prefect.deployments import run_deployment  # only when routing to another pool

        run = run_deployment(f"stages/{pool}", parameters={"names": names, "config": config})
        if run.state is None or not run.state.is_completed():
            ended = run.state.name if run.state else "unknown"
            raise RuntimeError(
                f"stages {', '.join(names)} on pool {pool} ended {ended} (flow run {run.id}); their "
                "tables keep what was written: the next rebuild goes on from there"
            )
        for name in names:
            out[name] = {"pool": pool, "flow_run": str(run.id)}
    return out


@task
def review_task(config: dict[str, Any]) -> ReviewRun:
    """Enqueue and move on: stewards decide at their pace; the release takes what is decided."""
    out = pipeline.review(_settings(config))
    create_markdown_artifact(
        key="review-queue",
        markdown=progress_markdown(out.queue),
        description=f"review queue after this run ({out.enqueued} enqueued, {out.withdrawn} withdrawn)",
    )
    return out


@task(retries=1, retry_delay_seconds=30)
def recheck_task(config: dict[str, Any]) -> RecheckRun:
    """Released items re-checked at their sources (a budget a rebuild); the gone ones leave."""
    return pipeline.recheck(_settings(config))


def release_limit(settings: Settings) -> str:
    """The Prefect concurrency limit of releasing one data root (created by `surd deploy setup`)."""
    return "release-" + hashlib.sha1(str(Path(settings.data_root).resolve()).encode()).hexdigest()[:12]


@task
def release_task(config: dict[str, Any]) -> ReleaseInfo:
    """A release if the accepted set changed, then every release not yet announced is announced
    (one `surd.release.published` each, which starts embed → train → evaluate; flows/events.py)."""
    settings = _settings(config)
    with concurrency(release_limit(settings), occupy=1):  # without the limit: no wait
        info = pipeline.release_info(settings)
    info.announced = events.announce(settings)
    return info


@task
def status_task(config: dict[str, Any]) -> dict[str, Any]:

    settings = _settings(config)
    return status(settings, pipeline.open_data(settings))


@flow(name="release")
def release_flow(config: dict[str, Any] | None = None) -> ReleaseInfo:
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
    home = HOME_POOL if deployment.id else None  # run by its deployment: route stages by pool
    out.update(run_declared(config, home))
    out["review"] = review_task(config)
    out["recheck"] = recheck_task(config)
    release = release_task(config).path
    out["release"] = release
    if release and train:  # in production these run as their own deployments, on events
        out["embed"] = embed_flow(release, config=config)
        out["train"] = train_flow(release, out["embed"].model_id, config=config)
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
