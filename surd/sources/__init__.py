"""The source registry: every source the crawl reads, each a `Connector` (surd.sources.base) in
its own module, which holds all that is particular to it: its settings section and politeness
defaults, where a pass starts, how a page is fetched and parsed (fetching through surd.http kept
apart from parsing, pure functions), and its licence note. Everything that lists sources reads
this registry."""

from typing import Literal, get_args

from surd.sources import civitai, lexica, sdonline
from surd.sources.base import Connector

Source = Literal["civitai", "lexica", "sdonline"]  # every source, in crawl order
SOURCES: tuple[Source, ...] = get_args(Source)
REGISTRY: dict[str, Connector] = {
    c.name: c for c in (civitai.CONNECTOR, lexica.CONNECTOR, sdonline.CONNECTOR)
}
LICENCE_NOTES = {name: c.licence for name, c in REGISTRY.items()}  # in every release row and the card
assert tuple(REGISTRY) == SOURCES, "the Source literal and the registry name the same sources"
