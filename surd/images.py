"""The images stage: fetch each raw item's image, validate, normalise to a square, deduplicate.

Parts go to worker processes, one per core; each downloads its part on asyncio (httpx) under its
share of the per-host politeness limits and decodes and resizes each image (JPEG draft mode,
threads) as it arrives, so only the small normalised images come back. At most two parts per
worker are in flight, whatever the number of items. Parts are written in input order, so "the
first" of two duplicates is the same on every run.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx

from storage.layout import DataDir
from storage.schemas import DROPPED, OK
from surd.http import AsyncPoliteClient, FetchError
from surd.imaging import ImageRejected, NearDuplicateIndex, Normalised, normalise
from surd.settings import CrawlSettings, ImageSettings, Settings
from surd.stage import StageRun, batched, pending

OPT_OUT = ("noai", "noimageai")
TRANSIENT = ("timeout", "connection_error", "blocked", "http_429", "http_5")

Fetched = tuple[bytes | None, str | None, int | None]  # body, failure reason, HTTP status
Result = tuple[Normalised | None, str | None, int | None]


def opt_out(headers: httpx.Headers) -> str | None:
    """`X-Robots-Tag: noai` / `noimageai` veto the body before it is read."""
    for value in headers.get_list("x-robots-tag"):
        tokens = {t.strip().lower() for t in value.replace(":", ",").split(",")}
        if tokens & set(OPT_OUT):
            return "opt_out_noai"
    return None


async def fetch(client: AsyncPoliteClient, url: str) -> Fetched:
    try:
        resp = await client.get(url, expect="bytes", check_headers=opt_out)
    except FetchError as exc:
        return None, exc.reason, int(exc.reason[5:]) if exc.reason.startswith("http_") else None
    return resp.content, None, resp.status


def decode(fetched: Fetched, cfg: ImageSettings) -> Result:
    """Runs in a worker process: bytes → Normalised, or the reason it was rejected."""
    body, reason, code = fetched
    if body is None:
        return None, reason, code
    try:
        return normalise(body, cfg), None, code
    except ImageRejected as exc:
        return None, exc.reason, code


class _Deduper:
    def __init__(self, rows: Iterable[dict[str, Any]], max_distance: int) -> None:
        self.by_sha: dict[str, str] = {}
        self.near = NearDuplicateIndex(max_distance)
        for row in rows:
            if row["status"] == OK:
                self.add(row["sha256"], row["phash"], row["sample_id"])

    def add(self, sha: str, phash: str, ident: str) -> None:
        self.by_sha.setdefault(sha, ident)
        self.near.add(phash, ident)

    def first(self, img: Normalised) -> str | None:
        return self.by_sha.get(img.sha256) or self.near.find(img.phash)


def _row(raw: dict[str, Any], result: Result, dedup: _Deduper) -> dict[str, Any]:
    img, reason, code = result
    row: dict[str, Any] = {
        "sample_id": raw["sample_id"],
        "image_url": raw["image_url"],
        "http_status": code,
        "fetched_at": datetime.now(UTC),
    }
    if img is None:
        return {**row, "status": DROPPED, "reason": reason}
    row.update(
        orig_width=img.orig_width,
        orig_height=img.orig_height,
        orig_format=img.orig_format,
        sha256=img.sha256,
        phash=img.phash,
    )
    first = dedup.first(img)
    if first and first != raw["sample_id"]:
        return {**row, "status": DROPPED, "reason": f"duplicate_of:{first}", "duplicate_of": first}
    dedup.add(img.sha256, img.phash, raw["sample_id"])
    return {**row, "status": OK, "reason": None, "image": img.data}


def die_with_parent(parent: int) -> None:
    """Pool initializer: a worker ends when the stage's process does (even by SIGKILL), so a
    killed run leaves no orphan still downloading (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


DECODE_THREADS = 2  # per worker process: Pillow releases the GIL while decoding and resizing
_ROBOTS: dict[str, Any] = {}  # robots.txt rules, per worker process, across parts
_ON_DECODED: Callable[[], None] | None = None  # per item done, for progress (set per process)


def _worker_init(parent: int, decoded: Any) -> None:
    """Pool initializer: die with the parent, and count each item done in `decoded` (a shared
    integer the stage's process reads while it waits for parts)."""
    global _ON_DECODED
    die_with_parent(parent)

    def tick() -> None:
        with decoded.get_lock():
            decoded.value += 1

    _ON_DECODED = tick


class _Shown:
    """What the progress callback has been told: the items the workers have done (read while
    waiting for a part), and never less than the items written."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress, self.shown, self.written = progress, 0, 0
        self.decoded: Any = multiprocessing.Value("q", 0)

    def update(self) -> None:
        n = max(self.decoded.value, self.written)
        if self.progress and n > self.shown:
            self.progress(n - self.shown)
        self.shown = max(self.shown, n)

    def wrote(self, n: int) -> None:
        self.written += n
        self.update()

    def result(self, fut: Any) -> Any:
        while True:
            try:
                return fut.result(timeout=0.5)
            except TimeoutError:
                self.update()


def process_part(rows: list[dict[str, Any]], politeness: CrawlSettings, cfg: ImageSettings) -> list[Result]:
    """In a worker process: download a part (asyncio) and decode each image as it arrives
    (threads), so the big original bodies never cross a process boundary."""

    async def run() -> list[Result]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(DECODE_THREADS) as threads:
            async with AsyncPoliteClient(politeness, robots_cache=_ROBOTS) as client:

                async def one(row: dict[str, Any]) -> Result:
                    fetched = await fetch(client, row["image_url"])
                    result = await loop.run_in_executor(threads, decode, fetched, cfg)
                    if _ON_DECODED is not None:
                        _ON_DECODED()
                    return result

                return list(await asyncio.gather(*(one(r) for r in rows)))

    return asyncio.run(run())


def run_images(
    settings: Settings,
    data: DataDir,
    progress: Callable[[int], None] | None = None,
    rows: Iterable[dict[str, Any]] | None = None,
    submit: Callable[[list[dict[str, Any]], CrawlSettings], Any] | None = None,
    workers: int | None = None,
) -> StageRun:
    """Process the raw items not yet in the images table (or the given `rows`, for retries).

    Parts are fetched and decoded by `workers` processes: a local process pool, or, with `submit`
    (a part and its politeness share → a future with `.result()`), a cluster's workers (Dask).
    Either way this process writes the parts in input order and decides duplicates, so the table
    is the same."""
    raw, out = data.table("raw_items"), data.table("images")
    run = StageRun("images")
    dedup = _Deduper(
        out.iter_rows(["sample_id", "status", "sha256", "phash"]), settings.images.phash_max_distance
    )
    retrying = rows is not None
    todo = rows if rows is not None else pending(raw, out, ["image_url"])

    def emit(batch: list[dict[str, Any]], results: list[Result]) -> None:
        new = [_row(r, res, dedup) for r, res in zip(batch, results, strict=True)]
        if retrying:
            out.replace_rows(
                new, provenance={"stage": "images", "retry": True, "settings": settings.provenance()}
            )
        else:
            out.write(new, provenance={"stage": "images", "settings": settings.provenance()})
        run.add(new)
        shown.wrote(len(new))

    workers = workers or settings.images.workers or os.cpu_count() or 1
    # the per-host limits hold across all workers: each gets its share
    share = settings.crawl.model_copy(
        update={
            "requests_per_second": settings.images.requests_per_second / workers,
            "max_concurrency": max(1, settings.images.max_concurrency // workers),
        }
    )
    parts = batched(todo, settings.part_size)
    shown = _Shown(progress)
    if submit is None and workers == 1:
        global _ON_DECODED

        def tick() -> None:  # in this process: tell the callback at once
            shown.decoded.value += 1
            shown.update()

        _ON_DECODED = tick
        try:
            for batch in parts:
                emit(batch, process_part(batch, share, settings.images))
        finally:
            _ON_DECODED = None
        return run
    with ExitStack() as stack:
        if submit is None:
            pool = stack.enter_context(
                ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(os.getpid(), shown.decoded))
            )

            def submit(batch: list[dict[str, Any]], sh: CrawlSettings) -> Future[list[Result]]:
                return pool.submit(process_part, batch, sh, settings.images)

        window: deque[tuple[list[dict[str, Any]], Any]] = deque()
        for batch in parts:  # at most 2 parts per worker in flight
            window.append((batch, submit(batch, share)))
            if len(window) >= 2 * workers:
                done, fut = window.popleft()
                emit(done, shown.result(fut))
        while window:
            done, fut = window.popleft()
            emit(done, shown.result(fut))
    return run


def retryable(data: DataDir, reasons: list[str] | None = None) -> list[dict[str, Any]]:
    """The images that failed for one of `reasons` (prefixes; default: the transient failures)."""
    wanted = tuple(reasons) if reasons else TRANSIENT
    return [
        r
        for r in data.table("images").iter_rows(["sample_id", "status", "reason", "image_url"])
        if r["status"] == DROPPED
        and str(r["reason"]).startswith(wanted)
        and not str(r["reason"]).startswith("duplicate_of")
    ]


def retry_failed(
    settings: Settings,
    data: DataDir,
    reasons: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> StageRun:
    """Fetch again only the items that failed (by default the transient failures)."""
    return run_images(settings, data, progress, rows=retryable(data, reasons))
