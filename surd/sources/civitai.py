"""Civitai `/api/v1/images`: cursor pages of images with their generation metadata."""

from __future__ import annotations

import math
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr

from surd.http.errors import FetchError
from surd.sources.base import Client, Connector, Page, ParseError, RawItem, SourceSettings, to_int
from surd.sources.generation import civitai as generation_of

NAME = "civitai"
LICENCE = "Civitai images: rights stay with the uploaders; see https://civitai.com/content/tos"


class CivitaiSettings(SourceSettings):
    base_url: str = "https://civitai.com"  # note: civitai.com's robots.txt disallows /api/*
    api_key: SecretStr | None = None
    nsfw: Literal["None", "Soft", "Mature", "X"] = "None"
    sort: Literal["Most Reactions", "Most Comments", "Most Collected", "Newest", "Oldest"] = "Newest"
    period: Literal["AllTime", "Year", "Month", "Week", "Day"] = "AllTime"
    page_size: int = Field(200, ge=1, le=200)


EDGE_WIDTHS = (512, 800, 1200, 1600, 2200)


def request_params(cfg: CivitaiSettings, cursor: str | None) -> dict[str, str]:
    """The query of one page; identical for every page of a crawl except the cursor."""
    params = {
        "limit": str(cfg.page_size),
        "withMeta": "true",
        "flatMeta": "true",
        "sort": cfg.sort,
        "period": cfg.period,
        "nsfw": cfg.nsfw,
    }
    if cursor:
        params["cursor"] = cursor
    return params


def image_uuid(url: str) -> str | None:
    """The Cloudflare image id path segment, shared by every rendition of one upload."""
    parts = urlsplit(url).path.rstrip("/").split("/")
    return parts[-3] if len(parts) >= 4 else None


def rendition_url(url: str, width: int | None, height: int | None, target: int = 512) -> str:
    """Rewrite the size segment so the short side is at least `target` px (or ask the original)."""
    parts = urlsplit(url)
    segs = parts.path.split("/")
    if len(segs) < 4 or "=" not in segs[-2]:
        return url
    if width and height:
        need = math.ceil(target * max(1.0, width / height))
        fit = [w for w in EDGE_WIDTHS if w >= need and w <= width]
        segs[-2] = f"width={fit[0]}" if fit else "original=true"
    else:
        segs[-2] = "original=true"
    return urlunsplit(parts._replace(path="/".join(segs)))


def _meta(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    inner = raw.get("meta")
    if "prompt" not in raw and isinstance(inner, dict):  # legacy nested {id, meta}
        return inner
    return raw


def parse_item(obj: dict[str, Any], site: str) -> RawItem:
    meta = _meta(obj.get("meta")) or {}
    clip_skip = meta.get("clipSkip", meta.get("Clip skip"))
    url = obj.get("url") or None
    width, height = to_int(obj.get("width")), to_int(obj.get("height"))
    kind = obj.get("type", "image")
    return RawItem(
        source=NAME,
        source_item_id=str(obj["id"]),
        image_url=rendition_url(url, width, height) if url else None,
        complex_prompt=meta.get("prompt") if isinstance(meta.get("prompt"), str) else None,
        negative_prompt=meta.get("negativePrompt") if isinstance(meta.get("negativePrompt"), str) else None,
        source_url=f"{site.rstrip('/')}/images/{obj['id']}",
        width=width,
        height=height,
        model=meta.get("Model") or obj.get("baseModel"),
        seed=str(meta["seed"]) if meta.get("seed") is not None else None,
        nsfw_level=_nsfw(obj),
        image_key=image_uuid(url) if url else None,
        meta={
            "meta": meta,
            "clip_skip": clip_skip,
            "postId": obj.get("postId"),
            "username": obj.get("username"),
            "baseModel": obj.get("baseModel"),
            "createdAt": obj.get("createdAt"),
        },
        drop_reason=None if kind == "image" else f"not_an_image_type:{kind}",
    )


def _nsfw(obj: dict[str, Any]) -> str | None:
    level = obj.get("nsfwLevel")
    if level is None and isinstance(obj.get("nsfw"), str):  # the 2023 /models enum
        level = obj["nsfw"]
    return str(level) if level is not None else None


def parse_models_page(payload: Any, site: str) -> Page:
    """The 2023 `/api/v1/models` page SURD was built from (its images lost `meta` in 2024-02):
    kept for regression against the original dataset, not for crawling."""
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise ParseError("civitai models: expected an object with an 'items' list")
    items = [
        parse_item(img, site)
        for model in payload["items"]
        for version in model.get("modelVersions") or []
        for img in version.get("images") or []
    ]
    nxt = (payload.get("metadata") or {}).get("nextPage")
    return Page(items=items, next_position=str(nxt) if nxt else None)


def parse_trpc_posts(payload: Any, site: str) -> Page:
    """The internal `image.getImagesAsPostsInfinite` answer: images carry a bare uuid and no
    prompt (that needs one `image.getGenerationData` call each), so every item is dropped
    with `no_prompt`; kept to document and test that path, not to crawl it."""
    try:
        data = payload["result"]["data"]["json"]
        posts = data["items"]
    except (KeyError, TypeError):
        raise ParseError("civitai trpc: expected result.data.json.items") from None
    items = []
    for post in posts:
        for img in post.get("images") or []:
            name = img.get("name") or f"{img['id']}.jpeg"
            obj = {
                **img,
                "url": f"https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/{img['url']}/original=true/{name}",
            }
            items.append(parse_item(obj, site))
    nxt = data.get("nextCursor")
    return Page(items=items, next_position=str(nxt) if nxt else None)


def parse_page(payload: Any, site: str) -> Page:
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise ParseError("civitai: expected an object with an 'items' list")
    items = []
    for obj in payload["items"]:
        if not isinstance(obj, dict) or "id" not in obj:
            raise ParseError("civitai: an item without an id")
        items.append(parse_item(obj, site))
    meta = payload.get("metadata") or {}
    cursor = meta.get("nextCursor") if isinstance(meta, dict) else None
    return Page(items=items, next_position=str(cursor) if cursor not in (None, "") else None)


def fetch(position: str, cfg: CivitaiSettings, client: Client) -> Page:
    """One page of `/api/v1/images` at a cursor ("start": the first page)."""
    cursor = None if position == "start" else position
    headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key else None
    url = f"{cfg.base_url.rstrip('/')}/api/v1/images"
    resp = client.get(url, params=request_params(cfg, cursor), headers=headers)
    page = parse_page(resp.json(), cfg.base_url)
    page.url = url + ("?cursor=" + cursor if cursor else "")
    return page


def item_status(row: dict[str, Any], cfg: CivitaiSettings, client: Client) -> str | None:
    """What Civitai's own lookup says of one image: `gone` when it answers 404 or 410 (no such
    image), `present` when it lists it, None otherwise (an empty answer for an existing id is a
    known bug, civitai/civitai#1329: it proves nothing)."""
    url = f"{cfg.base_url.rstrip('/')}/api/v1/images"
    params = {"imageId": str(row["source_item_id"]), "withMeta": "false"}
    try:
        payload = client.get(url, params=params).json()
    except FetchError as exc:
        return "gone" if exc.reason in ("http_404", "http_410") else None
    items = payload.get("items") if isinstance(payload, dict) else None
    listed = isinstance(items, list) and any(str(i.get("id")) == str(row["source_item_id"]) for i in items)
    return "present" if listed else None


CONNECTOR = Connector(
    NAME,
    CivitaiSettings,
    "start",
    fetch,
    LICENCE,
    generation_of,
    asks_all_levels=lambda cfg: cfg.nsfw != "None",
    item_status=item_status,
)
