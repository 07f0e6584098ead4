"""The whole path in one process, without an orchestrator: what `surd rebuild --engine local` and
the local demo run (flows/rebuild.py runs the same library calls as Prefect tasks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from surd import pipeline
from surd.app import training
from surd.settings import Settings
from surd.stages.crawl import CrawlFailed
from surd.summary import describe, describe_crawl


def rebuild(
    settings: Settings, train_adapter: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The whole path in-process, without an orchestrator (the flow runs the same calls): the
    crawls, every declared batch stage in order (surd.chain), review, release, then training."""
    out: dict[str, Any] = {}
    failed: list[Any] = []
    for source in settings.sources.enabled:
        try:
            out[f"crawl_{source}"] = pipeline.crawl(settings, source)
            log(describe_crawl(out[f"crawl_{source}"]))
        except CrawlFailed as exc:  # the other sources and the stages go on over what is there
            failed.extend(exc.failed)
            log(str(exc))
    for run in pipeline.run_all(settings, log=lambda r: log(describe(r.stage, r))):
        out[run.stage] = run
    out["review"] = pipeline.review(settings)
    log(describe("review", out["review"]))
    out["recheck"] = pipeline.recheck(settings)  # items deleted upstream leave this release
    log(describe("recheck", out["recheck"]))
    rel = pipeline.release(settings)
    out["release"] = rel
    if rel and train_adapter:
        out["embed"] = pipeline.embed(settings, rel)
        out["train"] = training.train(settings, rel, out["embed"].model_id)
        out["evaluate"] = training.evaluate_run(settings, out["train"]["run_dir"])
    if failed:  # after the rest ran: a rebuild with a site down is not a success
        raise CrawlFailed(failed)
    return out
