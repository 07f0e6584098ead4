"""The crawl stage: connectors → the raw items table, resumable page by page.

Per source, the position (cursor, query index, listing index) is checkpointed only after the
page's items and its log row are durably written. A crawl killed at any moment refetches at most
one page, whose items are then skipped by sample id: no gap, no duplicate.
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
from surd.settings import Settings
from surd.sources import civitai, lexica, sdonline
from surd.sources.base import Page, ParseError, RawItem

SOURCES = ("civitai", "lexica", "sdonline")


@dataclass
class CrawlStats:
    source: str
    crawl_id: str
    pages_ok: int = 0
    pages_failed: int = 0
    items_written: int = 0
    failures: list[str] = field(default_factory=list)


def _fetch_page(source: str, position: str, settings: Settings, client: PoliteClient) -> Page:
    """One page of one source at `position` (its cursor or index)."""
    src = settings.sources
    if source == "civitai":
        cfg = src.civitai
        cursor = None if position == "start" else position
        headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key else None
        url = f"{cfg.base_url.rstrip('/')}/api/v1/images"
        params = civitai.request_params(cfg, cursor)
        resp = client.get(url, params=params, headers=headers)
        page = civitai.parse_page(resp.json(), cfg.base_url)
        page.url = url + ("?cursor=" + cursor if cursor else "")
        return page
    if source == "lexica":
        index = int(position)
        query = src.lexica.queries[index]
        url = f"{src.lexica.base_url.rstrip('/')}/api/v1/search"
        page = lexica.parse_search(client.get(url, params={"q": query}).json(), src.lexica.base_url)
        page.next_position = str(index + 1) if index + 1 < len(src.lexica.queries) else None
        page.url = f"{url}?q={query}"
        return page
    if source == "sdonline":
        index = int(position)
        base = src.sdonline.base_url.rstrip("/")
        url = f"{base}/prompts/{src.sdonline.listing_slugs[index]}"
        cards = sdonline.parse_listing(client.get(url, expect="html").content.decode(), url)
        items: list[RawItem] = []
        failed: list[tuple[str, str]] = []
        for path, item_id in cards:
            detail_url = base + path
            try:
                html = client.get(detail_url, expect="html").content.decode()
                items.append(sdonline.parse_detail(html, detail_url, item_id))
            except FetchError as exc:
                failed.append((detail_url, exc.reason))
            except ParseError as exc:
                failed.append((detail_url, f"parse_error:{exc}"))
        nxt = str(index + 1) if index + 1 < len(src.sdonline.listing_slugs) else None
        return Page(items=items, next_position=nxt, url=url, failed_items=failed)
    raise ValueError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")


def _start_position(source: str) -> str:
    return "start" if source == "civitai" else "0"


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
    """Crawl one source until its end, its limit, or a repeating cursor; resumable at any point."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    state_name = f"crawl-{source}"
    state = data.state(state_name)
    if state.get("done") and not full:
        return CrawlStats(source, state["crawl_id"])
    if full or not state:
        state = {
            "crawl_id": uuid.uuid4().hex[:12],
            "position": _start_position(source),
            "seen_positions": [],
            "items": 0,
            "done": False,
        }
        data.save_state(state_name, state)
    stats = CrawlStats(source, state["crawl_id"])
    raw = data.table("raw_items")
    pages = data.table("crawl_pages")
    limit = limit or settings.crawl.limit
    keys = _image_keys(raw.iter_rows(["sample_id", "status", "image_key"]))
    while True:
        position = state["position"]
        page_id = f"{state['crawl_id']}:{source}:{position}"
        now = datetime.now(UTC)
        try:
            page = _fetch_page(source, position, settings, client)
        except (FetchError, ParseError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, FetchError) else f"parse_error:{exc}"
            pages.write([_page_row(page_id, state, source, position, None, "failed", reason, 0, None, now)])
            stats.pages_failed += 1
            stats.failures.append(f"{position}: {reason}")
            break  # a failing part raises in the flow's retry; the checkpoint stays on this page
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
        raw.write(
            rows,
            provenance={
                "crawl_id": state["crawl_id"],
                "source": source,
                "page": page.url,
                "settings": settings.provenance(),
            },
        )
        for i, (url, reason) in enumerate(page.failed_items):
            pages.write(
                [
                    _page_row(
                        f"{page_id}:item{i}", state, source, position, url, "failed", reason, 0, None, now
                    )
                ]
            )
        repeated = page.next_position is not None and page.next_position in state["seen_positions"]
        pages.write(
            [
                _page_row(
                    page_id,
                    state,
                    source,
                    position,
                    page.url,
                    OK,
                    "repeated_cursor" if repeated else None,
                    len(rows),
                    page.next_position,
                    now,
                )
            ]
        )
        stats.pages_ok += 1
        stats.items_written += len(rows)
        state["items"] += len(rows)
        state["seen_positions"] = [*state["seen_positions"], position]
        finished = page.next_position is None or repeated or (limit is not None and state["items"] >= limit)
        state["position"] = page.next_position or position
        state["done"] = finished
        data.save_state(state_name, state)
        if progress:
            progress(len(rows))
        if finished:
            break
    return stats


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
