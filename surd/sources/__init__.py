"""Source connectors: fetching (surd.http) kept apart from parsing (pure functions here)."""

from typing import Literal, get_args

Source = Literal["civitai", "lexica", "sdonline"]  # every source, in crawl order
SOURCES: tuple[Source, ...] = get_args(Source)
LICENCE_NOTES = {  # per source, in every release row and its dataset card
    "civitai": "Civitai images: rights stay with the uploaders; see https://civitai.com/content/tos",
    "lexica": "Lexica images: https://lexica.art/license",
    "sdonline": "Stable Diffusion Online: CreativeML Open RAIL-M (CompVis SD licence)",
}
