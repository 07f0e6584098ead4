"""Lexica `/api/v1/search?q=`: 50 results per query, no pagination."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from surd.sources.base import Client, Connector, Page, ParseError, RawItem, SourceSettings, to_int
from surd.sources.generation import lexica as generation_of

NAME = "lexica"
LICENCE = "Lexica images: https://lexica.art/license"


class LexicaSettings(SourceSettings):
    base_url: str = "https://lexica.art"
    image_base_url: str = "https://image.lexica.art"
    requests_per_second: float | None = Field(1 / 3, gt=0)  # 20/min, as the known API clients
    mode: Literal["search", "infinite"] = "search"
    model: str = "lexica-aperture-v3.5"
    queries: list[str] = ["portrait", "landscape", "cat", "city", "fantasy"]  # noqa: RUF012 (a pydantic field)


def parse_search(payload: Any, site: str) -> Page:
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise ParseError("lexica: expected an object with an 'images' list")
    items = []
    for obj in payload["images"]:
        if not isinstance(obj, dict) or not obj.get("id"):
            raise ParseError("lexica: an image without an id")
        items.append(
            RawItem(
                source=NAME,
                source_item_id=str(obj["id"]),
                image_url=obj.get("src") or obj.get("srcSmall"),
                complex_prompt=obj.get("prompt") if isinstance(obj.get("prompt"), str) else None,
                negative_prompt=obj.get("negativePrompt"),
                source_url=obj.get("gallery") or f"{site.rstrip('/')}/prompt/{obj.get('promptid')}",
                width=to_int(obj.get("width")),
                height=to_int(obj.get("height")),
                model=obj.get("model"),
                seed=str(obj["seed"]) if obj.get("seed") is not None else None,
                nsfw_level="nsfw" if obj.get("nsfw") else "sfw",
                image_key=None,
                meta={k: obj.get(k) for k in ("promptid", "guidance", "grid")},
                drop_reason="grid_image" if obj.get("grid") else None,
            )
        )
    return Page(items=items, next_position=None)


def infinite_body(query: str, cursor: int, model: str) -> dict[str, Any]:
    """The website's own feed request (gallery-dl sends the same)."""
    return {"text": query, "searchMode": "images", "source": "search", "cursor": cursor, "model": model}


def parse_infinite(payload: Any, site: str, image_base: str) -> Page:
    """`{prompts, images, nextCursor}`: each image joined to its prompt by `promptid`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise ParseError("lexica feed: expected an object with an 'images' list")
    prompts = {p.get("id"): p for p in payload.get("prompts") or [] if isinstance(p, dict)}
    items = []
    for img in payload["images"]:
        if not isinstance(img, dict) or not img.get("id"):
            raise ParseError("lexica feed: an image without an id")
        p = prompts.get(img.get("promptid"), {})
        items.append(
            RawItem(
                source=NAME,
                source_item_id=str(img["id"]),
                image_url=f"{image_base.rstrip('/')}/full_jpg/{img['id']}",
                complex_prompt=p.get("prompt") if isinstance(p.get("prompt"), str) else None,
                negative_prompt=p.get("negativePrompt") if isinstance(p.get("negativePrompt"), str) else None,
                source_url=f"{site.rstrip('/')}/prompt/{img.get('promptid')}",
                width=to_int(img.get("width") or p.get("width")),
                height=to_int(img.get("height") or p.get("height")),
                model=p.get("model"),
                seed=str(p["seed"]) if p.get("seed") is not None else None,
                meta={"promptid": img.get("promptid"), "guidance": p.get("c"), "grid": p.get("grid")},
                drop_reason="grid_image" if p.get("grid") else None,
            )
        )
    nxt = payload.get("nextCursor")
    return Page(items=items, next_position=str(nxt) if nxt and items else None)


def fetch(position: str, cfg: LexicaSettings, client: Client) -> Page:
    """One page at "<query index>:<cursor>": a search (all of a query), or an infinite-scroll page."""
    qi, _, cur = position.partition(":")
    index, query = int(qi), cfg.queries[int(qi)]
    following = f"{index + 1}:0" if index + 1 < len(cfg.queries) else None
    if cfg.mode == "search":
        url = f"{cfg.base_url.rstrip('/')}/api/v1/search"
        page = parse_search(client.get(url, params={"q": query}).json(), cfg.base_url)
        page.next_position, page.url = following, f"{url}?q={query}"
        return page
    url = f"{cfg.base_url.rstrip('/')}/api/infinite-prompts"
    body = infinite_body(query, int(cur or 0), cfg.model)
    page = parse_infinite(client.post_json(url, body).json(), cfg.base_url, cfg.image_base_url)
    page.next_position = f"{index}:{page.next_position}" if page.next_position else following
    page.url = f"{url}#q={query}&cursor={cur or 0}"
    return page


CONNECTOR = Connector(NAME, LexicaSettings, "0:0", fetch, LICENCE, generation_of)
