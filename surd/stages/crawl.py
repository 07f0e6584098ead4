"""The crawl stage: connectors → the raw items table, resumable page by page.

Per source, the position (cursor, query index, listing index) is checkpointed only after the
page's items and its log row are durably written. A crawl killed at any moment refetches at most
one page, whose items are then skipped by sample id: no gap, no duplicate.

A finished crawl is followed, on the next call, by an incremental pass from the start that stops
at the first page holding nothing new (`full=True` makes a full pass instead). Every pass records
how it ended (`end`, `limit`, `repeated_cursor`, `reached_known_items`, or the failure that
stopped it, after which the next call resumes at the failed page) and whether robots.txt was
obeyed or overridden for the source.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from typing import Any

from storage.layout import DataDir
from storage.schemas import OK
from surd.http.client import PoliteClient
from surd.http.errors import FetchError
from surd.http.rules import REGION_BLOCKED
from surd.settings import CrawlSettings, Settings
from surd.sources import REGISTRY, SOURCES
from surd.sources.base import Connector, Page, ParseError
from surd.sources.safety import source_level
from surd.stages import takedown

__all__ = ["SOURCES", "CrawlFailed", "CrawlStats", "crawl_source"]
FINISHED = ("end", "limit", "repeated_cursor", "reached_known_items")  # a pass that ended well


@dataclass
class CrawlStats:
    source: str
    crawl_id: str
    pages_ok: int = 0
    pages_failed: int = 0
    items_written: int = 0
    new_items: int = 0
    taken_down: int = 0  # new items a takedown covers: kept as ids only, never fetched
    stop_reason: str | None = None
    failures: list[str] = field(default_factory=list)
    failed_url: str | None = None

    @property
    def failed(self) -> bool:
        """The pass stopped on a failure (its last page failed); the next call resumes there."""
        return self.stop_reason is not None and self.stop_reason not in FINISHED

    def failure_message(self) -> str:
        return (
            f"crawl {self.source} failed: {self.stop_reason} at {self.failed_url} "
            f"({self.pages_ok} page(s) and {self.items_written} item(s) written before it; "
            f"the next run resumes at that page){_advice(self.stop_reason or '')}"
        )


def _advice(reason: str) -> str:
    if reason == REGION_BLOCKED:
        return (
            "; the site answers HTTP 451: it blocks requests from this region, and retrying will not "
            "help. Crawl from a region it serves, or leave the source out (sources.enabled)"
        )
    if reason == "blocked":
        return "; the site answered with a challenge or block page: set an API key, lower the rate, or wait"
    if reason == "robots_disallowed":
        return (
            "; robots.txt disallows it: use the site's documented API, or the source's obey_robots override"
        )
    if reason in ("connection_error", "timeout"):
        return "; is the site (or --base-url) reachable from here?"
    return ""


class CrawlFailed(RuntimeError):
    """One or more crawl passes stopped on a failure; the message names source, reason and URL."""

    def __init__(self, failed: list[CrawlStats]) -> None:
        super().__init__("; ".join(s.failure_message() for s in failed))
        self.failed = failed


def obey_robots(settings: Settings, source: str) -> bool:
    override = getattr(settings.sources, source).obey_robots
    return settings.crawl.obey_robots if override is None else override


def politeness(settings: Settings, source: str) -> CrawlSettings:
    """The crawl settings with this source's overrides applied."""
    src = getattr(settings.sources, source)
    update = {
        k: getattr(src, k)
        for k in ("obey_robots", "requests_per_second", "max_concurrency")
        if getattr(src, k) is not None
    }
    return settings.crawl.model_copy(update=update)


def crawl_source(
    source: str,
    settings: Settings,
    data: DataDir,
    client: PoliteClient,
    *,
    limit: int | None = None,
    full: bool = False,
    progress: Callable[[int], None] | None = None,
) -> CrawlStats:
    """One pass over a source: resumes an unfinished pass, else starts a new one."""
    if source not in REGISTRY:
        raise ValueError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    run = _Pass(REGISTRY[source], settings, data, full, limit or settings.crawl.limit)
    while True:
        position = run.state["position"]
        now = datetime.now(UTC)
        try:
            page = run.connector.fetch(position, getattr(settings.sources, source), client)
        except (FetchError, ParseError) as exc:
            run.failed(position, exc, now)
            break
        stop = run.record(position, page, now)
        if progress:
            progress(run.last_written)
        if stop is not None:
            break
    return run.stats


class _Pass:
    """One pass of a crawl over a source: its checkpointed state, its counts, and the tables it
    writes (raw items; a log row per page, and per item that failed within a page)."""

    def __init__(
        self, connector: Connector, settings: Settings, data: DataDir, full: bool, limit: int | None
    ) -> None:
        self.connector, self.settings, self.data, self.limit = connector, settings, data, limit
        source = connector.name
        self.state_name = f"crawl-{source}"
        state = data.state(self.state_name)
        if full or not state or state.get("done"):
            state = {
                "crawl_id": uuid.uuid4().hex[:12],
                "position": connector.start,
                "seen_positions": [],
                "items": 0,
                "done": False,
                "incremental": bool(state) and not full,
                "robots": "obeyed" if obey_robots(settings, source) else "overridden",
                "started_at": datetime.now(UTC).isoformat(),
                "seen": {"items": 0, "with_prompt": 0, "levels": {}},
                **({"down_since": state["down_since"]} if state.get("down_since") else {}),
            }
            data.save_state(self.state_name, state)
        self.state: dict[str, Any] = state
        self.stats = CrawlStats(source, state["crawl_id"])
        self.raw, self.pages = data.table("raw_items"), data.table("crawl_pages")
        self.keys = _image_keys(self.raw.iter_rows(["sample_id", "status", "image_key"]))
        self.known = self.raw.ids()  # grows with each page written: never re-read per page
        self.gone = takedown.load(settings)
        self.last_written = 0
        self.meta = {
            "crawl_id": state["crawl_id"],
            "source": source,
            "robots": state["robots"],
            "incremental": state["incremental"],
            "settings": settings.provenance(),
        }

    def _log(self, page_id: str, position: str, url: str | None, status: str, reason: str | None,
             items: int, nxt: str | None, now: datetime) -> None:  # fmt: skip
        row = _page_row(
            page_id, self.state, self.connector.name, position, url, status, reason, items, nxt, now
        )
        self.pages.write([row], provenance=self.meta)

    def failed(self, position: str, exc: FetchError | ParseError, now: datetime) -> None:
        """The page failed: logged, and the checkpoint stays, so the next call retries this page.
        The source is down (or blocked) since this failure, unless it failed already."""
        reason = exc.reason if isinstance(exc, FetchError) else f"parse_error:{exc}"
        page_id = f"{self.state['crawl_id']}:{self.connector.name}:{position}"
        self._log(f"{page_id}:failed:{uuid.uuid4().hex[:6]}", position, None, "failed", reason, 0, None, now)
        stats = self.stats
        stats.pages_failed += 1
        stats.failures.append(f"{position}: {reason}")
        stats.stop_reason = reason
        stats.failed_url = (
            exc.url if isinstance(exc, FetchError) else _page_url(self.connector, self.settings)
        )
        self.state["last_failure"] = {"reason": reason, "url": stats.failed_url, "at": now.isoformat()}
        self.state.setdefault("down_since", now.isoformat())
        if reason == REGION_BLOCKED:
            self.state["region_blocked"] = True
        self.data.save_state(self.state_name, self.state)

    def _rows(self, page: Page) -> list[dict[str, Any]]:
        """The page's raw-item rows; an image already known under another item is its duplicate;
        an item of an excluded model is dropped as `model_excluded:<model>`."""
        rows = []
        exclude = getattr(self.settings.sources, self.connector.name).exclude_models
        for item in page.items:
            if exclude and item.model and any(fnmatch(item.model.lower(), x.lower()) for x in exclude):
                item.drop_reason = item.drop_reason or f"model_excluded:{item.model}"
            row = item.to_row(self.state["crawl_id"])
            tid = self.gone.match(row) if self.gone else None
            if tid is not None:  # its id stays, so the item is counted and never fetched
                rows.append(_taken_down(row, tid))
                self.stats.taken_down += row["sample_id"] not in self.known
                continue
            if row["status"] == OK and item.image_key:
                first = self.keys.get(item.image_key)
                if first and first != row["sample_id"]:
                    row = item.to_row(self.state["crawl_id"], duplicate_of=first)
                else:
                    self.keys[item.image_key] = row["sample_id"]
            rows.append(row)
        if self.limit is not None:
            rows = rows[: max(0, self.limit - self.state["items"])]
        return rows

    def _count(self, page: Page) -> None:
        self.state["seen"] = _counted(self.state, page)

    def _sfw_only(self) -> bool:
        """The pass asked for every NSFW level and saw at least SFW_ONLY_MIN items, all safe: the
        site filtered its answer (Civitai does from restricted regions and on civitai.green)."""
        cfg = getattr(self.settings.sources, self.connector.name)
        seen = self.state.get("seen") or {}
        levels = seen.get("levels", {})
        labelled = sum(n for k, n in levels.items() if k != "None")
        unsafe = sum(n for k, n in levels.items() if k not in ("None", "0"))
        return bool(self.connector.asks_all_levels(cfg) and labelled >= SFW_ONLY_MIN and unsafe == 0)

    def _stop(self, position: str, page: Page, rows: list[dict[str, Any]], new: int) -> str | None:
        """Why the pass ends after this page, or None to go on to the next."""
        state = self.state
        if page.next_position is not None and page.next_position in [*state["seen_positions"], position]:
            return "repeated_cursor"
        if state["incremental"] and bool(page.items) and new == 0:
            return "reached_known_items"
        if self.limit is not None and state["items"] + len(rows) >= self.limit:
            return "limit"
        if page.next_position is None:
            return "end"
        return None

    def record(self, position: str, page: Page, now: datetime) -> str | None:
        """Write the page's items, then its log row, then the checkpoint; why the pass ends."""
        source = self.connector.name
        page_id = f"{self.state['crawl_id']}:{source}:{position}"
        self._count(page)
        rows = self._rows(page)
        new = sum(1 for r in rows if r["sample_id"] not in self.known)
        self.raw.write(rows, provenance={**self.meta, "page": page.url})
        self.known.update(r["sample_id"] for r in rows)
        for i, (url, reason) in enumerate(page.failed_items):
            self._log(f"{page_id}:item{i}", position, url, "failed", reason, 0, None, now)
        stop = self._stop(position, page, rows, new)
        self._log(page_id, position, page.url, OK, stop, len(rows), page.next_position, now)
        stats = self.stats
        stats.pages_ok += 1
        stats.items_written += len(rows)
        stats.new_items += new
        self.state.update(
            items=self.state["items"] + len(rows),
            seen_positions=[*self.state["seen_positions"], position],
            position=page.next_position or position,
            done=stop is not None,
            stop_reason=stop,
            last_failure=None,
            down_since=None,
            region_blocked=False,
        )
        if stop is not None:
            self.state.update(finished_at=now.isoformat(), sfw_only=self._sfw_only())
        self.data.save_state(self.state_name, self.state)
        self.last_written = len(rows)
        if stop is not None:
            stats.stop_reason = stop
        return stop


SFW_ONLY_MIN = 20  # items a pass must see, all safe, before it says the source answered safe-only


def _counted(state: dict[str, Any], page: Page) -> dict[str, Any]:
    """The pass's counts of what the source showed (known items included, and the items of the
    page that failed to parse): items, items with a prompt, items by NSFW level."""
    seen = dict(state.get("seen") or {"items": 0, "with_prompt": 0, "levels": {}})
    seen["items"] += len(page.items) + len(page.failed_items)
    seen["with_prompt"] += sum(1 for i in page.items if (i.complex_prompt or "").strip())
    levels = dict(seen["levels"])
    for i in page.items:
        key = str(source_level(i.nsfw_level))
        levels[key] = levels.get(key, 0) + 1
    seen["levels"] = levels
    return seen


def _taken_down(row: dict[str, Any], tid: int) -> dict[str, Any]:
    """A taken-down item's raw row: who and when it was seen, and why it is dropped; no prompt,
    URL or metadata of it is stored."""
    keep = ("sample_id", "source", "source_item_id", "fetched_at", "crawl_id")
    return {**dict.fromkeys(row), **{k: row[k] for k in keep}} | takedown.drop_row(row["sample_id"], tid)


def _page_url(connector: Connector, settings: Settings) -> str:
    return str(getattr(settings.sources, connector.name).base_url)


def _image_keys(rows: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for row in rows:
        if row["image_key"] and row["status"] == OK:
            out.setdefault(row["image_key"], row["sample_id"])
    return out


def _page_row(
    page_id: str,
    state: dict[str, Any],
    source: str,
    position: str,
    url: str | None,
    status: str,
    reason: str | None,
    items: int,
    nxt: str | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "page_id": page_id,
        "crawl_id": state["crawl_id"],
        "source": source,
        "position": position,
        "url": url,
        "status": status,
        "reason": reason,
        "items": items,
        "next_position": nxt,
        "fetched_at": now,
    }
