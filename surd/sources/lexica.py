"""Lexica `/api/v1/search?q=`: 50 results per query, no pagination."""

from __future__ import annotations

from typing import Any

from surd.sources.base import Page, ParseError, RawItem, to_int

NAME = "lexica"


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
