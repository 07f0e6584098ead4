"""Each stage as one call over the settings; the flows and the CLI both call these."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storage.layout import DataDir
from storage.tables import set_fault_hook
from surd.settings import Settings
from surd.stage import Partition

Progress = Callable[[int], None] | None


def open_data(settings: Settings) -> DataDir:
    if settings.device == "cuda":
        from surd.models.tiny import device_for

        device_for("cuda")  # no visible GPU: fail at start, naming the valid options
    data = DataDir(settings.data_root).open()
    if settings.fault_kill_at:
        table, _, n = settings.fault_kill_at.partition(":")

        def hook(name: str, written: int) -> None:
            if name == table and written >= int(n or 1):
                os.kill(os.getpid(), signal.SIGKILL)

        set_fault_hook(hook)
    return data


def crawl(settings: Settings, source: str, progress: Progress = None, full: bool = False) -> dict[str, Any]:
    """One pass over a source (resuming an unfinished one); the client honours its robots policy."""
    from dataclasses import asdict

    from surd.crawl import crawl_source, politeness
    from surd.http import PoliteClient

    data = open_data(settings)
    with PoliteClient(politeness(settings, source)) as client:
        return asdict(crawl_source(source, settings, data, client, progress=progress, full=full))


def images(
    settings: Settings, progress: Progress = None, submit: Any = None, workers: int | None = None
) -> dict[str, Any]:
    """The images stage; `submit`/`workers`: fetch and decode parts on a cluster (flows/scale.py)."""
    from surd.images import run_images

    return vars(run_images(settings, open_data(settings), progress, submit=submit, workers=workers))


def images_retry(
    settings: Settings, reasons: list[str] | None = None, progress: Progress = None
) -> dict[str, Any]:
    from surd.images import retry_failed

    return vars(retry_failed(settings, open_data(settings), reasons, progress))


def captions(settings: Settings, progress: Progress = None, part: Partition = None) -> dict[str, Any]:
    from surd.caption import run_captions

    return vars(run_captions(settings, open_data(settings), progress, part))


def clip_filter(settings: Settings, progress: Progress = None, part: Partition = None) -> dict[str, Any]:
    from surd.clipfilter import run_clip_filter

    return vars(run_clip_filter(settings, open_data(settings), progress, part))


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
    from surd.embed import run_embed

    n, model_id = run_embed(settings, open_data(settings), Path(release_path), llm, progress, part)
    return {"embedded": n, "model_id": model_id}


def train(
    settings: Settings,
    release_path: str,
    llm_model_id: str,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    from surd.adapter_stage import run_train

    return run_train(settings, open_data(settings), Path(release_path), llm_model_id, log=log)


def evaluate(
    settings: Settings, run_dir: str, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    from surd.adapter_stage import run_evaluate

    return run_evaluate(settings, open_data(settings), Path(run_dir), progress=progress)


def rebuild(
    settings: Settings, train_adapter: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The whole path in-process, without an orchestrator (the flow runs the same calls)."""
    out: dict[str, Any] = {}
    for source in settings.sources.enabled:
        out[f"crawl_{source}"] = crawl(settings, source)
        log(f"crawl {source}: {out[f'crawl_{source}']}")
    for name, fn in (("images", images), ("captions", captions), ("clip_scores", clip_filter)):
        out[name] = fn(settings)
        log(f"{name}: {out[name]}")
    out["review"] = review(settings)
    rel = release(settings)
    out["release"] = rel
    if rel and train_adapter:
        out["embed"] = embed(settings, rel)
        out["train"] = train(settings, rel, out["embed"]["model_id"])
        out["evaluate"] = evaluate(settings, out["train"]["run_dir"])
    return out
