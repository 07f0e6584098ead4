"""The pipeline, declared once: which batch stages run, in which order, between the crawl and review.

Everything that needs the order reads it from here: the stage counts (`surd status`), the local
rebuild and the Prefect one (each stage a task, on the work pool it declares), the Dask
partitioning, the command line (one command per stage), the release's manifest counts, the dataset
card's funnel and the test helpers. No other module lists the stages in order.

Each stage says the rest itself (surd.stages.base.Stage): its table and schema, the columns of
which tables it reads, the pool it needs and how it spreads on a cluster. Its input is the stage
before it here: a stage added to the list takes the items its predecessor kept, and the stage after
it takes the ones it keeps. Adding a stage to an existing data root needs nothing else (its pending
items are its input's kept ones; later stages count only what went on; items already queued for
review that it drops are withdrawn from the queue with its reason).

    crawl → raw_items → images → captions → clip_scores → nsfw_scores → near_duplicates → review → release
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage import schemas
from storage.funnel import Counts, Funnel
from storage.layout import DataDir
from storage.schemas import TableSpec
from surd.settings import Mount, Settings
from surd.stages.base import Stage
from surd.stages.captions import CaptionStage
from surd.stages.clip import ClipStage
from surd.stages.columns import ReleaseColumn
from surd.stages.images import ImagesStage
from surd.stages.near_duplicates import NearDuplicateStage
from surd.stages.nsfw import NsfwStage

HEAD = "raw_items"  # the crawl's table: where every sample enters
HEAD_LABEL = "collected (raw items with a prompt)"


@dataclass(frozen=True)
class Pipeline:
    """The batch stages in order after the crawl's table; review and release come after them."""

    stages: tuple[type[Stage[Any]], ...]
    head: str = HEAD

    def __post_init__(self) -> None:
        names = [self.head, *(s.name for s in self.stages)]
        if len(set(names)) != len(names):
            raise ValueError(f"a table appears twice in the pipeline: {names}")
        sections = [s.settings_section() for s in self.stages]
        if len(set(sections)) != len(sections):
            raise ValueError(f"two stages share a settings section: {sections} (name one with Stage.named)")
        for s in self.stages:
            TableSpec(s.schema, s.compression)  # its first columns are the status columns
        self.release_schema()  # no release column declared twice

    def schemas(self) -> dict[str, TableSpec]:
        """Each declared stage's table: its schema and compression."""
        return {s.name: TableSpec(s.schema, s.compression) for s in self.stages}

    def data_dir(self, root: Path | str) -> DataDir:
        """A data root whose writers know every declared stage's table."""
        return DataDir(root, self.schemas())

    def mounts(self) -> dict[str, Mount]:
        """Each stage's parameters, by settings section (surd.config.load_settings mounts them)."""
        return {s.settings_section(): s.mount() for s in self.stages}

    def release_columns(self) -> list[tuple[str, ReleaseColumn]]:
        """(stage table, column) of every column the declared stages add to a release, in order."""
        return [(s.name, c) for s in self.stages for c in s.release]

    def release_schema(self) -> pa.Schema:
        """A release's schema: its own columns, then the declared stages' (storage.schemas)."""
        return schemas.release_schema([c.field for _, c in self.release_columns()])

    @property
    def tables(self) -> list[str]:
        """Every table of the chain in order, the crawl's first."""
        return [self.head, *(s.name for s in self.stages)]

    @property
    def last(self) -> str:
        """The table whose kept samples go to review."""
        return self.tables[-1]

    def __iter__(self) -> Iterator[type[Stage[Any]]]:
        return iter(self.stages)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage_class(self, name: str) -> type[Stage[Any]]:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no batch stage {name!r}; the stages are: {', '.join(self.names())}")

    def upstream(self, name: str) -> tuple[str, ...]:
        """The tables before stage `name`, the crawl's first and its input last."""
        tables = self.tables
        self.stage_class(name)
        return tuple(tables[: tables.index(name)])

    def before(self, name: str) -> list[str]:
        """The declared stages that run before stage `name`, in order."""
        self.stage_class(name)  # KeyError naming the stages when there is no such stage
        names = self.names()
        return names[: names.index(name)]

    def build(self, name: str, settings: Settings, data: DataDir, **options: Any) -> Stage[Any]:
        """Stage `name`, told what comes before it; `options` go to its constructor."""
        return self.stage_class(name)(settings, data, self.upstream(name), **options)

    def with_stage(self, stage: type[Stage[Any]], after: str) -> Pipeline:
        """This pipeline with `stage` inserted after table `after` (what one more line in the
        declaration does; for a stage registered at run time, as a test or a plugin would)."""
        at = self.tables.index(after)  # ValueError: no such table
        return Pipeline((*self.stages[:at], stage, *self.stages[at:]), self.head)

    def command(self, stage: type[Stage[Any]]) -> str:
        """`surd <command>` runs the stage."""
        return stage.command or stage.name.replace("_", "-")

    def labels(self) -> dict[str, str]:
        """Each table's column in the dataset card's funnel."""
        return {self.head: HEAD_LABEL} | {s.name: s.label or s.name for s in self.stages}

    def counts(self, data: DataDir) -> dict[str, Counts]:
        """Every table's counts against what went on through the tables before it."""
        with Funnel(data.tables_dir) as f:
            return f.counts(self.tables)

    def went_on(self, data: DataDir, through: str | None = None) -> Any:
        """The sample ids kept by every table up to `through` (default: all; what review takes)."""
        tables = self.tables
        upto = tables[: tables.index(through) + 1] if through else tables
        with Funnel(data.tables_dir) as f:
            return f.went_on(upto)

    def first_drop(self, data: DataDir, ids: Any) -> dict[str, tuple[str, str]]:
        """{sample id: (table, reason)} of the first stage that dropped each of `ids`."""
        with Funnel(data.tables_dir) as f:
            return f.first_drop(self.tables, ids)


def declare(*stages: type[Stage[Any]]) -> Pipeline:
    return Pipeline(tuple(stages))


# ---- the declaration ----------------------------------------------------------------------------
PIPELINE = declare(
    ImagesStage,
    CaptionStage,
    ClipStage,
    NsfwStage,
    NearDuplicateStage,
)


def stages_on(pool: str, pipeline: Pipeline = PIPELINE) -> Sequence[type[Stage[Any]]]:
    """The declared stages that run on work pool `pool` (cpu or gpu)."""
    return [s for s in pipeline if s.pool == pool]
