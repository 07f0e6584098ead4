"""Stable Diffusion Online: HTML listing pages → detail pages. Selectors live here only."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bs4 import BeautifulSoup

from surd.http.errors import FetchError
from surd.sources.base import Client, Connector, Page, ParseError, RawItem, SourceSettings, to_int
from surd.sources.generation import page_only as generation_of

NAME = "sdonline"
LICENCE = "Stable Diffusion Online: CreativeML Open RAIL-M (CompVis SD licence)"


class SdOnlineSettings(SourceSettings):
    base_url: str = "https://stablediffusionweb.com"
    listing_slugs: list[str] = ["ui-design", "cel-shading", "monogram-logo"]  # noqa: RUF012 (a pydantic field)


CARD = 'a[href^="/image/"]'
TITLE = "h1"
EDITOR_LINK = 'a[href^="/image-generator?"]'
DETAIL_PATH = re.compile(r"^/image/(\d+)-([\w-]*)$")


def parse_listing(html: str, page_url: str) -> list[tuple[str, str]]:
    """(detail path, numeric id) of every card; a page with none is a parser failure."""
    soup = BeautifulSoup(html, "html.parser")
    out: list[tuple[str, str]] = []
    for a in soup.select(CARD):
        m = DETAIL_PATH.match(str(a.get("href", "")))
        if m and m.group(1) not in {i for _, i in out}:
            out.append((m.group(0), m.group(1)))
    if not out:
        raise ParseError(f"sdonline: no result cards on listing page {page_url}")
    return out


def _panel_text(soup: BeautifulSoup, label: str) -> str | None:
    for span in soup.find_all("span"):
        if span.get_text(strip=True) == label:
            box = span.find_next("div", class_="break-words")
            if box is not None:
                return re.sub(r"\s*,\s*", ", ", box.get_text(" ")).strip(" ,") or None
    return None


def _dd(soup: BeautifulSoup, label: str) -> str | None:
    for dt in soup.find_all("dt"):
        if dt.get_text(strip=True) == label:
            dd = dt.find_next_sibling("dd")
            return dd.get_text(strip=True) if dd else None
    return None


def parse_detail(html: str, page_url: str, item_id: str) -> RawItem:
    soup = BeautifulSoup(html, "html.parser")
    link = soup.select_one(EDITOR_LINK)
    query = parse_qs(urlsplit(str(link["href"])).query) if link is not None else {}
    prompt = query.get("prompt", [None])[0] or _panel_text(soup, "Prompt:")
    if prompt is None and link is None:
        raise ParseError(f"sdonline: no prompt panel and no editor link on {page_url}")
    image_url = query.get("imageUrl", [None])[0]
    if image_url is None:
        img = soup.select_one("img.w-full")
        image_url = str(img["src"]) if img is not None and img.get("src") else None
    size = _dd(soup, "Size:")
    w = h = None
    if size and re.match(r"^\d+\s*[xX]\s*\d+$", size):
        w, h = (to_int(v) for v in re.split(r"\s*[xX]\s*", size))
    title = soup.select_one(TITLE)
    return RawItem(
        source=NAME,
        source_item_id=item_id,
        image_url=image_url,
        complex_prompt=prompt,
        negative_prompt=_panel_text(soup, "Negative prompt:"),
        source_url=page_url,
        width=w,
        height=h,
        model=None,
        meta={
            "title": title.get_text(strip=True) if title else None,
            "style": query.get("style", [None])[0] or _dd(soup, "Style:"),
            "ratio": query.get("ratio", [None])[0] or _dd(soup, "Aspect ratio:"),
        },
    )


def fetch(position: str, cfg: SdOnlineSettings, client: Client) -> Page:
    """One listing page ("<listing index>:0") and each of its cards' detail pages; a detail page
    that fails is recorded with the page, not fatal to it."""
    index = int(position.partition(":")[0])
    base = cfg.base_url.rstrip("/")
    url = f"{base}/prompts/{cfg.listing_slugs[index]}"
    cards = parse_listing(client.get(url, expect="html").content.decode(), url)
    items: list[RawItem] = []
    failed: list[tuple[str, str]] = []
    for path, item_id in cards:
        detail_url = base + path
        try:
            html = client.get(detail_url, expect="html").content.decode()
            items.append(parse_detail(html, detail_url, item_id))
        except FetchError as exc:
            failed.append((detail_url, exc.reason))
        except ParseError as exc:
            failed.append((detail_url, f"parse_error:{exc}"))
    nxt = f"{index + 1}:0" if index + 1 < len(cfg.listing_slugs) else None
    return Page(items=items, next_position=nxt, url=url, failed_items=failed)


def item_status(row: dict[str, Any], cfg: SdOnlineSettings, client: Client) -> str | None:
    """An item's detail page: `gone` when it answers 404 or 410, `present` when it loads."""
    if not row.get("source_url"):
        return None
    try:
        client.get(str(row["source_url"]), expect="html")
    except FetchError as exc:
        return "gone" if exc.reason in ("http_404", "http_410") else None
    return "present"


CONNECTOR = Connector(NAME, SdOnlineSettings, "0:0", fetch, LICENCE, generation_of, item_status=item_status)
