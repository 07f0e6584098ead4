"""What a steward selects from the queue and in which order: source, CLIP margin, safety, text in
either prompt, no audit items (the grid), items skipped; sorted by queue order or a column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from surd.review.schema import items

SORTS = {  # what a steward may sort the queue by: its order, or a column either way
    "queue": (),
    "margin": (sa.nulls_last(items.c.margin.asc()),),
    "-margin": (sa.nulls_last(items.c.margin.desc()),),
    "safety": (sa.nulls_last(items.c.safety_level.asc()),),
    "-nsfw": (sa.nulls_last(items.c.nsfw_detector.desc()),),
}


@dataclass(frozen=True)
class Filters:
    """What a steward wants to see, and in which order; None means any."""

    source: str | None = None
    margin_min: float | None = None
    margin_max: float | None = None
    nsfw_levels: tuple[str, ...] | None = None
    safety_max: int | None = None  # at most this level (surd.sources.safety); unlabelled items too
    text: str | None = None  # in either prompt (case-insensitive)
    sort: str = "queue"  # a key of SORTS
    single_only: bool = False  # no audit item (the grid: they are never decided in bulk)
    exclude: tuple[str, ...] = ()  # items this steward skipped

    def clauses(self) -> list[Any]:
        out: list[Any] = []
        if self.source:
            out.append(items.c.source == self.source)
        if self.margin_min is not None:
            out.append(items.c.margin >= self.margin_min)
        if self.margin_max is not None:
            out.append(items.c.margin <= self.margin_max)
        if self.nsfw_levels:
            out.append(items.c.nsfw_level.in_(self.nsfw_levels))
        if self.safety_max is not None:
            out.append(sa.or_(items.c.safety_level.is_(None), items.c.safety_level <= self.safety_max))
        if self.text:
            escaped = self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            out.append(items.c.prompts.like(f"%{escaped.lower()}%", escape="\\"))
        if self.single_only:
            out.append(items.c.needed == 1)
        if self.exclude:
            out.append(items.c.sample_id.not_in(self.exclude))
        return out

    def order(self) -> tuple[Any, ...]:
        if self.sort not in SORTS:
            raise ValueError(f"sort by one of {', '.join(SORTS)}, not {self.sort!r}")
        return SORTS[self.sort]
