"""What every source connector is made of: its settings section, the record it yields, the page
a crawl checkpoints after, and the `Connector` the registry (surd.sources) holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from storage.schemas import DROPPED, OK
from surd.ids import normalise_prompt, sample_id


class SourceSettings(BaseModel):
    """A source's section of the settings. Its politeness fields override the `crawl` section's
    (None: the crawl's value); a source sets its own defaults in its subclass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    obey_robots: bool | None = None
    requests_per_second: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1)
    exclude_models: list[str] = Field(
        [],
        description="models whose items are left out (`model_excluded`), as shell patterns matched "
        "without case: e.g. ['lexica-aperture*'] keeps Lexica to Stable Diffusion",
    )


class Client(Protocol):
    """What a connector needs of the HTTP client (surd.http.PoliteClient)."""

    def get(
        self,
        url: str,
        *,
        expect: Literal["json", "html", "bytes"] = ...,
        params: dict[str, str] | None = ...,
        headers: dict[str, str] | None = ...,
    ) -> Any: ...

    def post_json(self, url: str, body: dict[str, object]) -> Any: ...


class ParseError(ValueError):
    """A page whose structure no longer matches what the parser knows."""


@dataclass
class RawItem:
    source: str
    source_item_id: str
    image_url: str | None
    complex_prompt: str | None
    negative_prompt: str | None = None
    source_url: str | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    seed: str | None = None
    nsfw_level: str | None = None
    image_key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    drop_reason: str | None = None

    def to_row(self, crawl_id: str, duplicate_of: str | None = None) -> dict[str, Any]:
        prompt = normalise_prompt(self.complex_prompt)
        reason = None
        if self.drop_reason:
            reason = self.drop_reason
        elif duplicate_of:
            reason = f"duplicate_of:{duplicate_of}"
        elif not prompt:
            reason = "no_prompt"
        elif not self.image_url:
            reason = "no_image_url"
        return {
            "sample_id": sample_id(self.source, self.source_item_id),
            "status": DROPPED if reason else OK,
            "reason": reason,
            "source": self.source,
            "source_item_id": self.source_item_id,
            "source_url": self.source_url,
            "image_url": self.image_url,
            "complex_prompt": prompt or None,
            "negative_prompt": normalise_prompt(self.negative_prompt) or None,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "seed": self.seed,
            "nsfw_level": self.nsfw_level,
            "image_key": self.image_key,
            "meta_json": json.dumps(self.meta, sort_keys=True, default=str),
            "fetched_at": datetime.now(UTC),
            "crawl_id": crawl_id,
        }


@dataclass
class Page:
    """One parsed page: its items and where the crawl goes next (None = the end)."""

    items: list[RawItem]
    next_position: str | None
    url: str = ""
    failed_items: list[tuple[str, str]] = field(default_factory=list)  # (url, reason)


def to_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Connector:
    """One source, all it takes to crawl it: its name, its settings section (where it is, its
    politeness defaults), the position a pass starts from, how one page is fetched and parsed
    (position → a `Page` naming the next position: how a crawl resumes), its licence note, and
    how its raw items' generation parameters become typed release columns."""

    name: str
    settings: type[SourceSettings]
    start: str
    fetch: Callable[[str, Any, Client], Page]  # (position, its settings section, client)
    licence: str
    generation: Callable[[dict[str, Any]], dict[str, Any]]  # a raw item row → storage.schemas.GENERATION
    # whether a pass asked for every NSFW level (then an all-safe answer is noticed: `sfw_only`)
    asks_all_levels: Callable[[Any], bool] = lambda cfg: False
    # an item's own page at the source, asked again by the re-check (surd.stages.recheck): `gone`
    # (the source says it is deleted), `present`, or None (it cannot say); None: no item lookup
    item_status: Callable[[dict[str, Any], Any, Client], str | None] | None = None
