"""The images stage: fetch each raw item's image, validate, normalise to a square, deduplicate."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx

from storage.layout import DataDir
from storage.schemas import DROPPED, OK
from surd.http import FetchError, PoliteClient
from surd.imaging import ImageRejected, NearDuplicateIndex, Normalised, normalise
from surd.settings import Settings
from surd.stage import StageRun, batched, pending

OPT_OUT = ("noai", "noimageai")


def opt_out(headers: httpx.Headers) -> str | None:
    """`X-Robots-Tag: noai` / `noimageai` veto the body before it is read."""
    for value in headers.get_list("x-robots-tag"):
        tokens = {t.strip().lower() for t in value.replace(":", ",").split(",")}
        if tokens & set(OPT_OUT):
            return "opt_out_noai"
    return None


def fetch_one(
    url: str, settings: Settings, client: PoliteClient
) -> tuple[Normalised | None, str | None, int | None]:
    try:
        resp = client.get(url, expect="bytes", check_headers=opt_out)
    except FetchError as exc:
        code = int(exc.reason[5:]) if exc.reason.startswith("http_") else None
        return None, exc.reason, code
    try:
        return normalise(resp.content, settings.images), None, resp.status
    except ImageRejected as exc:
        return None, exc.reason, resp.status


def run_images(
    settings: Settings,
    data: DataDir,
    client: PoliteClient,
    progress: Callable[[int], None] | None = None,
) -> StageRun:
    raw, out = data.table("raw_items"), data.table("images")
    run = StageRun("images")
    by_sha: dict[str, str] = {}
    near = NearDuplicateIndex(settings.images.phash_max_distance)
    for row in out.iter_rows(["sample_id", "status", "sha256", "phash"]):
        if row["status"] == OK:
            by_sha.setdefault(row["sha256"], row["sample_id"])
            near.add(row["phash"], row["sample_id"])
    workers = settings.images.workers or settings.crawl.max_concurrency * 4
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in batched(pending(raw, out, ["image_url"]), settings.part_size):
            results = list(pool.map(lambda r: fetch_one(r["image_url"], settings, client), batch))
            rows = [_row(r, res, by_sha, near) for r, res in zip(batch, results, strict=True)]
            out.write(rows, provenance={"stage": "images", "settings": settings.provenance()})
            run.add(rows)
            if progress:
                progress(len(rows))
    return run


def _row(
    raw: dict[str, Any],
    result: tuple[Normalised | None, str | None, int | None],
    by_sha: dict[str, str],
    near: NearDuplicateIndex,
) -> dict[str, Any]:
    img, reason, code = result
    row: dict[str, Any] = {
        "sample_id": raw["sample_id"],
        "image_url": raw["image_url"],
        "http_status": code,
        "fetched_at": datetime.now(UTC),
    }
    if img is None:
        return {**row, "status": DROPPED, "reason": reason}
    first = by_sha.get(img.sha256) or near.find(img.phash)
    row.update(
        orig_width=img.orig_width,
        orig_height=img.orig_height,
        orig_format=img.orig_format,
        sha256=img.sha256,
        phash=img.phash,
    )
    if first:
        return {**row, "status": DROPPED, "reason": f"duplicate_of:{first}", "duplicate_of": first}
    by_sha[img.sha256] = raw["sample_id"]
    near.add(img.phash, raw["sample_id"])
    return {**row, "status": OK, "reason": None, "image": img.data}
