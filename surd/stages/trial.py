"""A stage tried on rows of your own: no data root, no funnel, no other stage's tables. What
datatrove's tests do with `filter.filter(doc)`: `run_on(CaptionWords, [{"sample_id": "a",
"simple_prompt": "a cat"}], min_words=2)` gives the rows the stage would write for them.

It suits a stage whose decision depends on its rows alone (a `Filter`, a model stage); a stage that
reads its own table or another's while it decides (near duplicates, images' duplicate search) is
tried through a data root instead."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

from surd.settings import Settings, build_settings
from surd.stages.base import Rows, Stage


def run_on(
    stage: type[Stage[Any]], rows: Iterable[dict[str, Any]], settings: Settings | None = None, **params: Any
) -> Rows:
    """The rows `stage` decides for `rows` (each a `sample_id` and the columns its `reads` names),
    with its parameters' defaults overridden by `params` (checked against its `Params`). Settings
    default to the `tiny` profile on the CPU, so a model stage loads its tiny seeded model."""
    settings = settings or build_settings(profile="tiny", device="cpu")
    tried = stage(settings, None, upstream=())  # type: ignore[arg-type]  # no data root, by design
    if params:
        tried.params = stage.Params.model_validate({**tried.params.model_dump(), **params})
    out: Rows = []
    with ExitStack() as stack:
        tried.start(stack)
        for batch in tried.batches(iter(rows)):
            out.extend(tried.decide(batch))
    return out
