"""The images stage: fetch each raw item's image, validate, normalise to a square, deduplicate.

Parts go to worker processes, one per core; each downloads its part on asyncio (httpx) under its
share of the per-host politeness limits and decodes and resizes each image (JPEG draft mode,
threads) as it arrives, so only the small normalised images come back. At most two parts per
worker are in flight, whatever the number of items. Parts are written in input order, so "the
first" of two duplicates is the same on every run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import DataDir
from storage.schemas import DROPPED, OK, STATUS_FIELDS, is_ok
from surd.http.client import AsyncPoliteClient
from surd.http.errors import FetchError
from surd.parallel import Done, batched, die_with_parent, in_order
from surd.settings import CrawlSettings, Settings
from surd.stages.base import Partition, Stage
from surd.stages.dedup import Deduper
from surd.stages.images_params import ImageParams
from surd.stages.normalise import ImageRejected, Normalised, normalise

OPT_OUT = ("noai", "noimageai")
TRANSIENT = ("timeout", "connection_error", "blocked", "http_429", "http_5")

IMAGES = pa.schema(
    [
        *STATUS_FIELDS,
        pa.field("image_url", pa.string()),
        pa.field("http_status", pa.int32()),
        pa.field("orig_width", pa.int32()),
        pa.field("orig_height", pa.int32()),
        pa.field("orig_format", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("phash", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC")),
    ]
)

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


def decode(fetched: Fetched, cfg: ImageParams) -> Result:
    """Runs in a worker process: bytes → Normalised, or the reason it was rejected."""
    body, reason, code = fetched
    if body is None:
        return None, reason, code
    try:
        return normalise(body, cfg), None, code
    except ImageRejected as exc:
        return None, exc.reason, code


def _row(raw: dict[str, Any], result: Result) -> dict[str, Any]:
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
    return {**row, "status": OK, "reason": None, "image": img.data}


def stored_deduper(data: DataDir, settings: ImageParams) -> Deduper:
    """The kept images so far, read a part at a time from three columns (never the image bytes)."""
    dedup = Deduper(
        settings.phash_max_distance,
        settings.confirm_max_distance,
        zoom_distance=settings.zoom_max_distance,
        zoom_confirm=settings.zoom_confirm_max_distance,
    )
    for part in data.table("images").parts():
        t = pq.read_table(part, columns=["sample_id", "status", "sha256", "phash"])
        t = t.filter(is_ok(t))
        dedup.add(*(t.column(c).to_pylist() for c in ("sample_id", "sha256", "phash")))
    return dedup


DECODE_THREADS = 2  # per worker process: Pillow releases the GIL while decoding and resizing
_ROBOTS: dict[str, Any] = {}  # robots.txt rules, per worker process, across parts (a cache)


class _PoolWorker:
    """A pool worker process's own state, set once by the pool's initializer (never in the
    stage's process): the shared counter of items done that the stage reads for progress."""

    decoded: Any = None

    @classmethod
    def tick(cls) -> None:
        with cls.decoded.get_lock():
            cls.decoded.value += 1


def _worker_init(parent: int, decoded: Any) -> None:
    """Pool initializer: die with the parent, and count each item done in `decoded` (a shared
    integer the stage's process reads while it waits for parts)."""
    die_with_parent(parent)
    _PoolWorker.decoded = decoded


def _pooled_part(rows: list[dict[str, Any]], politeness: CrawlSettings, cfg: ImageParams) -> list[Result]:
    """`process_part` in a pool worker, counting each item done for the stage's progress."""
    return process_part(rows, politeness, cfg, _PoolWorker.tick)


class _Shown:
    """What the progress callback has been told: the items the workers have done (read while
    waiting for a part), and never less than the items written (told from the writer thread)."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress, self.shown, self.written = progress, 0, 0
        self.decoded: Any = multiprocessing.Value("q", 0)
        self.lock = threading.Lock()

    def update(self) -> None:
        with self.lock:
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


def process_part(
    rows: list[dict[str, Any]],
    politeness: CrawlSettings,
    cfg: ImageParams,
    on_done: Callable[[], None] | None = None,
) -> list[Result]:
    """In a worker process: download a part (asyncio) and decode each image as it arrives
    (threads), so the big original bodies never cross a process boundary; `on_done` is told of
    each item done (progress)."""

    async def run() -> list[Result]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(DECODE_THREADS) as threads:
            async with AsyncPoliteClient(politeness, robots_cache=_ROBOTS) as client:

                async def one(row: dict[str, Any]) -> Result:
                    fetched = await fetch(client, row["image_url"])
                    result = await loop.run_in_executor(threads, decode, fetched, cfg)
                    if on_done is not None:
                        on_done()
                    return result

                return list(await asyncio.gather(*(one(r) for r in rows)))

    return asyncio.run(run())


class ImagesStage(Stage[tuple[list[dict[str, Any]], list[Result]]]):
    """Each raw item's image fetched, validated, normalised to a square and deduplicated.

    Parts are fetched and decoded by `workers` processes: a local process pool, or, with `submit`
    (a part and its politeness share → a future with `.result()`), a cluster's workers (Dask).
    Either way this process decides duplicates in input order, so the table is the same. With
    `rows` (a retry), those rows are fetched again and replace their old versions."""

    name, reads, schema = "images", {"raw_items": ("image_url",)}, IMAGES
    label, compression = "images kept", "none"  # JPEG bytes: no CPU spent trying to compress them
    scale, retries = "parts", 2  # on a cluster its parts are fetched and decoded by the workers
    Params = ImageParams
    reports_progress = True  # items as the workers finish them, not only parts as written

    def __init__(
        self,
        settings: Settings,
        data: DataDir,
        upstream: tuple[str, ...] | None = None,
        rows: list[dict[str, Any]] | None = None,
        submit: Callable[[list[dict[str, Any]], CrawlSettings], Any] | None = None,
        workers: int | None = None,
    ) -> None:
        super().__init__(settings, data, upstream)
        self.rows, self.submit = rows, submit
        self.workers = workers or self.params.workers or os.cpu_count() or 1

    def todo(self, part: Partition = None) -> Iterator[dict[str, Any]]:
        assert part is None, "the images stage decides duplicates in one process: no partitions"
        return iter(self.rows) if self.rows is not None else super().todo()

    def start(self, stack: ExitStack) -> None:
        self.shown = _Shown(self.progress)  # items the workers have done, between parts
        self.dedup = stored_deduper(self.data, self.params)
        # the per-host limits hold across all workers: each gets its share
        self.share = self.settings.crawl.model_copy(
            update={
                "requests_per_second": self.params.requests_per_second / self.workers,
                "max_concurrency": max(1, self.params.max_concurrency // self.workers),
            }
        )
        if self.submit is None and self.workers == 1:
            shown = self.shown

            def tick() -> None:  # in this process: tell the callback at once
                shown.decoded.value += 1
                shown.update()

            self.submit = lambda batch, share: Done(process_part(batch, share, self.params, tick))
            self.window = 1
            return
        self.window = 2 * self.workers  # at most 2 parts per worker in flight
        if self.submit is None:
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    self.workers, initializer=_worker_init, initargs=(os.getpid(), self.shown.decoded)
                )
            )
            cfg = self.params
            self.submit = lambda batch, share: pool.submit(_pooled_part, batch, share, cfg)

    def batches(self, items: Iterator[dict[str, Any]]) -> Iterator[tuple[list[dict[str, Any]], list[Result]]]:
        submit = self.submit
        assert submit is not None
        parts = batched(items, self.settings.part_size)
        return in_order(parts, lambda batch: submit(batch, self.share), self.window, wait=self.shown.result)

    def decide(self, batch: tuple[list[dict[str, Any]], list[Result]]) -> list[dict[str, Any]]:
        raw, results = batch
        rows = [_row(r, res) for r, res in zip(raw, results, strict=True)]
        new = [r for r in rows if r["status"] == OK]
        found = self.dedup.decide(
            [r["sample_id"] for r in new], [r["sha256"] for r in new], [r["phash"] for r in new]
        )
        for row, match in zip(new, found, strict=True):
            if match is not None:
                del row["image"]
                row.update(status=DROPPED, reason=match.reason(), duplicate_of=match.first)
        return rows

    def provenance(self) -> dict[str, Any]:
        if self.rows is not None:
            return {**super().provenance(), "retry": True}
        return super().provenance()

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.rows is not None:
            self._out.replace_rows(rows, provenance=self.provenance())
        else:
            self._out.write(rows, provenance=self.provenance())
        self.shown.wrote(len(rows))


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
