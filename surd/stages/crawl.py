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
from typing import Any

from storage.layout import DataDir
from storage.schemas import OK
from surd.http import FetchError, PoliteClient
from surd.settings import CrawlSettings, Settings
from surd.sources import SOURCES, civitai, lexica, sdonline
from surd.sources.base import Page, ParseError, RawItem

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


def _civitai(position: str, settings: Settings, client: PoliteClient) -> Page:
    cfg = settings.sources.civitai
    cursor = None if position == "start" else position
    headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key else None
    url = f"{cfg.base_url.rstrip('/')}/api/v1/images"
    resp = client.get(url, params=civitai.request_params(cfg, cursor), headers=headers)
    page = civitai.parse_page(resp.json(), cfg.base_url)
    page.url = url + ("?cursor=" + cursor if cursor else "")
    return page


def _lexica(position: str, settings: Settings, client: PoliteClient) -> Page:
    cfg = settings.sources.lexica
    qi, _, cur = position.partition(":")
    index, query = int(qi), cfg.queries[int(qi)]
    following = f"{index + 1}:0" if index + 1 < len(cfg.queries) else None
    if cfg.mode == "search":
        url = f"{cfg.base_url.rstrip('/')}/api/v1/search"
        page = lexica.parse_search(client.get(url, params={"q": query}).json(), cfg.base_url)
        page.next_position, page.url = following, f"{url}?q={query}"
        return page
    url = f"{cfg.base_url.rstrip('/')}/api/infinite-prompts"
    body = lexica.infinite_body(query, int(cur or 0), cfg.model)
    page = lexica.parse_infinite(client.post_json(url, body).json(), cfg.base_url, cfg.image_base_url)
    page.next_position = f"{index}:{page.next_position}" if page.next_position else following
    page.url = f"{url}#q={query}&cursor={cur or 0}"
    return page


def _sdonline(position: str, settings: Settings, client: PoliteClient) -> Page:
    cfg = settings.sources.sdonline
    index = int(position.partition(":")[0])
    base = cfg.base_url.rstrip("/")
    url = f"{base}/prompts/{cfg.listing_slugs[index]}"
    cards = sdonline.parse_listing(client.get(url, expect="html").content.decode(), url)
    items: list[RawItem] = []
    failed: list[tuple[str, str]] = []
    for path, item_id in cards:
        detail_url = base + path
        try:
            items.append(
                sdonline.parse_detail(
                    client.get(detail_url, expect="html").content.decode(), detail_url, item_id
                )
            )
        except FetchError as exc:
            failed.append((detail_url, exc.reason))
        except ParseError as exc:
            failed.append((detail_url, f"parse_error:{exc}"))
    nxt = f"{index + 1}:0" if index + 1 < len(cfg.listing_slugs) else None
    return Page(items=items, next_position=nxt, url=url, failed_items=failed)


FETCHERS: dict[str, Callable[[str, Settings, PoliteClient], Page]] = {
    "civitai": _civitai,
    "lexica": _lexica,
    "sdonline": _sdonline,
}
START = {"civitai": "start", "lexica": "0:0", "sdonline": "0:0"}


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
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    state_name = f"crawl-{source}"
    state = data.state(state_name)
    if full or not state or state.get("done"):
        state = {
            "crawl_id": uuid.uuid4().hex[:12],
            "position": START[source],
            "seen_positions": [],
            "items": 0,
            "done": False,
            "incremental": bool(state) and not full,
            "robots": "obeyed" if obey_robots(settings, source) else "overridden",
            "started_at": datetime.now(UTC).isoformat(),
        }
        data.save_state(state_name, state)
    stats = CrawlStats(source, state["crawl_id"])
    raw, pages = data.table("raw_items"), data.table("crawl_pages")
    limit = limit or settings.crawl.limit
    keys = _image_keys(raw.iter_rows(["sample_id", "status", "image_key"]))
    meta = {
        "crawl_id": state["crawl_id"],
        "source": source,
        "robots": state["robots"],
        "incremental": state["incremental"],
        "settings": settings.provenance(),
    }
    while True:
        position = state["position"]
        page_id = f"{state['crawl_id']}:{source}:{position}"
        now = datetime.now(UTC)
        try:
            page = FETCHERS[source](position, settings, client)
        except (FetchError, ParseError) as exc:
            reason = exc.reason if isinstance(exc, FetchError) else f"parse_error:{exc}"
            pages.write(
                [
                    _page_row(
                        f"{page_id}:failed:{uuid.uuid4().hex[:6]}",
                        state,
                        source,
                        position,
                        None,
                        "failed",
                        reason,
                        0,
                        None,
                        now,
                    )
                ],
                provenance=meta,
            )
            stats.pages_failed += 1
            stats.failures.append(f"{position}: {reason}")
            stats.stop_reason = reason  # the checkpoint stays: the next call retries this page
            stats.failed_url = exc.url if isinstance(exc, FetchError) else _page_url(source, settings)
            state["last_failure"] = {"reason": reason, "url": stats.failed_url, "at": now.isoformat()}
            data.save_state(state_name, state)
            break
        known = raw.ids()
        rows = []
        for item in page.items:
            row = item.to_row(state["crawl_id"])
            if row["status"] == OK and item.image_key:
                first = keys.get(item.image_key)
                if first and first != row["sample_id"]:
                    row = item.to_row(state["crawl_id"], duplicate_of=first)
                else:
                    keys[item.image_key] = row["sample_id"]
            rows.append(row)
        if limit is not None:
            rows = rows[: max(0, limit - state["items"])]
        new = sum(1 for r in rows if r["sample_id"] not in known)
        raw.write(rows, provenance={**meta, "page": page.url})
        for i, (url, reason) in enumerate(page.failed_items):
            pages.write(
                [
                    _page_row(
                        f"{page_id}:item{i}", state, source, position, url, "failed", reason, 0, None, now
                    )
                ],
                provenance=meta,
            )
        repeated = page.next_position is not None and page.next_position in [
            *state["seen_positions"],
            position,
        ]
        reached_known = state["incremental"] and bool(page.items) and new == 0
        stop = (
            "repeated_cursor"
            if repeated
            else "reached_known_items"
            if reached_known
            else "limit"
            if limit is not None and state["items"] + len(rows) >= limit
            else "end"
            if page.next_position is None
            else None
        )
        pages.write(
            [
                _page_row(
                    page_id, state, source, position, page.url, OK, stop, len(rows), page.next_position, now
                )
            ],
            provenance=meta,
        )
        stats.pages_ok += 1
        stats.items_written += len(rows)
        stats.new_items += new
        state.update(
            items=state["items"] + len(rows),
            seen_positions=[*state["seen_positions"], position],
            position=page.next_position or position,
            done=stop is not None,
            stop_reason=stop,
            last_failure=None,
        )
        data.save_state(state_name, state)
        if progress:
            progress(len(rows))
        if stop is not None:
            stats.stop_reason = stop
            break
    return stats


def _page_url(source: str, settings: Settings) -> str:
    return str(getattr(settings.sources, source).base_url)


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
