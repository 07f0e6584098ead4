"""The one stage interface and its runner.

A stage says only what it decides: which columns of which tables it reads (`reads`, joined by
sample id), its output table (`name`, `schema`), how it loads its model once (`start`), how its
items are cut into batches (`batches`), and a batch's rows (`decide`), each row with `status` and
`reason`. A row-wise filter says even less: `Filter.keep(row) -> (ok, reason)`.

Which stage comes before which is not the stage's to say: the pipeline's one declaration
(surd.chain) puts it in order and hands it its `upstream` (the tables before it). `run_stage`
owns the rest for every stage: the pending ids (what went on through every upstream table and
is not yet in the output, storage.funnel), the partition, the join of what it reads, part writing
with provenance (on a write-behind thread, through the one bounded in-order map, so the model
never waits on the disk), progress, and the counts (in = kept + dropped by reason). Takedowns
are the caller's: it passes what they cover, and the runner writes drop rows for those items.
"""

from __future__ import annotations

import hashlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Generic, Literal, TypeVar

import pyarrow as pa

from storage.funnel import went_on
from storage.layout import DataDir
from storage.provenance import code_identity
from storage.schemas import DROPPED, OK, STATUS_FIELDS
from storage.tables import PartTable
from surd.parallel import batched, in_order, plan_threads, use_threads
from surd.settings import Mount, NoParams, Settings, StageParams
from surd.stages.columns import ReleaseColumn

B = TypeVar("B")  # what one batch is, for one stage
T = TypeVar("T")
Rows = list[dict[str, Any]]
Progress = Callable[[int], None] | None
Partition = tuple[int, int] | None  # (k, n): this worker's share of the items; None: all
TakenDown = Callable[[], Mapping[str, int]] | None  # {sample id: takedown id}, asked when there is work
Pool = Literal["cpu", "gpu"]
Scale = Literal["one", "partitions", "parts"]

TAKEDOWN = "takedown"  # the reason of a taken-down item's row: takedown:<id>
WRITES_IN_FLIGHT = 2  # parts decided and not yet written: the model runs one part ahead of the disk


@dataclass
class StageRun:
    """What one run of a stage did (the durable counts are in the tables; see surd.status)."""

    stage: str
    processed: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    model_id: str | None = None
    partitions: int = 1
    workers: list[str] = field(default_factory=list)  # where it ran, when on a cluster (name address)
    idle: str | None = None  # why there was nothing to do (which upstream table is empty or missing)

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.processed += 1
            if row["status"] == OK:
                self.kept += 1
            else:
                reason = str(row["reason"]).split(":")[0]
                self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def merge(runs: Sequence[StageRun]) -> StageRun:
    """One summary from the runs of one stage's partitions: the numbers and the per-reason counts
    add up; the model is the first run's that has one."""
    out = StageRun(runs[0].stage, partitions=len(runs))
    for r in runs:
        out.processed += r.processed
        out.kept += r.kept
        for reason, n in r.dropped.items():
            out.dropped[reason] = out.dropped.get(reason, 0) + n
        out.model_id = out.model_id or r.model_id
        out.workers += r.workers
    return out


def in_partition(sample_id: str, part: Partition) -> bool:
    """A stable split of the items into n disjoint partitions (by a hash of the id)."""
    if part is None:
        return True
    k, n = part
    return int(hashlib.sha1(sample_id.encode()).hexdigest()[:8], 16) % n == k


def not_done(
    items: Iterable[T],
    done: Container[Any],
    key: Callable[[T], Any],
    sample_id: Callable[[T], str],
    part: Partition = None,
) -> Iterator[T]:
    """The items whose `key` is not in `done` (the output's keys), of partition `part` only: what
    every stage has to do, whatever its input and output are."""
    return (i for i in items if key(i) not in done and in_partition(sample_id(i), part))


def joined(data: DataDir, ids: pa.Array, reads: Mapping[str, Sequence[str]]) -> Iterator[dict[str, Any]]:
    """The rows of `ids`, each with the columns `reads` names of each table, joined by sample id.
    The first table is streamed in its storage order (only the parts holding one of the ids are
    read: an image's bytes a batch at a time); the others are looked up once, by id. A sample
    missing from a table it must be read from is an error, never a silent skip."""
    if not len(ids):
        return
    wanted = ids.to_pylist()
    tables = list(reads.items())
    if not tables:
        yield from ({"sample_id": sid} for sid in wanted)
        return
    (first, first_cols), rest = tables[0], tables[1:]
    others = [(name, data.table(name).lookup(wanted, cols)) for name, cols in rest]
    seen = 0
    for row in data.table(first).iter_lookup(wanted, first_cols):
        sid = row["sample_id"]
        for name, found in others:
            if sid not in found:
                raise LookupError(f"sample {sid} went on but has no row in table {name}")
            row.update(found[sid])
        seen += 1
        yield row
    if seen != len(wanted):
        raise LookupError(f"{len(wanted) - seen} samples that went on have no row in table {first}")


class Stage(ABC, Generic[B]):
    """A batch stage: what went on through its upstream tables → batches → rows with `status` and
    `reason` → parts of its own table."""

    name: ClassVar[str]  # its output table: its counts in `surd status`, its write lock
    reads: ClassVar[Mapping[str, Sequence[str]]] = {}  # {table: columns} of each pending item
    schema: ClassVar[pa.Schema] = pa.schema(STATUS_FIELDS)  # its output's (status columns first)
    pool: ClassVar[Pool] = "cpu"  # the work pool it runs on in production (gpu: a model stage)
    scale: ClassVar[Scale] = "one"  # on a cluster: partitions by sample id, or parts sent out
    retries: ClassVar[int] = 1  # a failed run is retried this often by the orchestrator
    label: ClassVar[str] = ""  # its column in the dataset card's funnel ("captioned")
    command: ClassVar[str] = ""  # `surd <command>` runs it (default: its table's name with dashes)
    compression: ClassVar[str] = "zstd"  # its parts' Parquet compression
    reports_progress: ClassVar[bool] = False  # True: the stage tells `self.progress` itself
    drops_takedowns: ClassVar[bool] = True  # False: its input is a release, which has none
    Params: ClassVar[type[StageParams]] = NoParams  # its parameters: a model with defaults and bounds
    section: ClassVar[str] = ""  # its settings section, SURD_<SECTION>__<PARAM> (default: its name)
    defaults: ClassVar[Mapping[str, Any]] = {}  # parameter defaults its declaration gives (`named`)
    release: ClassVar[Sequence[ReleaseColumn]] = ()  # what it adds to every release

    def __init__(self, settings: Settings, data: DataDir, upstream: Sequence[str] | None = None) -> None:
        self.settings, self.data = settings, data
        self._upstream = None if upstream is None else tuple(upstream)
        self.model_id: str | None = None  # set by `start` when the stage runs a model
        self.progress: Progress = None
        self.params: Any = settings.stage(self.settings_section(), self.mount())  # a `Params`

    @classmethod
    def settings_section(cls) -> str:
        return cls.section or cls.name

    @classmethod
    def mount(cls) -> Mount:
        """How the declaration mounts its parameters into the settings."""
        return Mount(cls.Params, dict(cls.defaults))

    @classmethod
    def named(cls, name: str, label: str = "", **defaults: Any) -> type[Stage[B]]:
        """Another instance of this stage in one declaration: its own table, lock, command and
        settings section `name` (`SURD_<NAME>__<PARAM>`), parameter defaults `defaults` (checked
        now); its release columns are renamed `<name>_<column>` (or `name` for one named as the
        stage is). `PIPELINE = declare(..., CaptionWords, CaptionWords.named("caption_words_7",
        min_words=7))` runs both."""
        cls.Params.model_validate({**cls.defaults, **defaults})  # a wrong key or value fails here
        columns = [
            replace(c, name=name if c.name == cls.name else f"{name}_{c.name}", column=c.column or c.name)
            for c in cls.release
        ]
        return type(  # type: ignore[return-value]
            cls.__name__,
            (cls,),
            {
                "name": name,
                "section": name,
                "command": "",
                "label": label or f"{cls.label or cls.name} ({name})",
                "defaults": {**cls.defaults, **defaults},
                "release": tuple(columns),
                "__module__": cls.__module__,
                "__qualname__": f"{cls.__qualname__}[{name}]",
            },
        )

    @property
    def lock(self) -> str:
        """The write lock a run holds (storage.locks): one writer of the output at a time."""
        return self.name

    def output(self) -> PartTable:
        return PartTable(self.data.tables_dir, self.name, self.schema, "sample_id", self.compression)

    @property
    def upstream(self) -> tuple[str, ...]:
        """The tables before it, the crawl's first and its input last (the declaration's to say)."""
        if self._upstream is None:
            raise ValueError(
                f"stage {self.name!r} was not told what comes before it: build it through the "
                "pipeline's declaration (surd.chain.PIPELINE.build) or give it `upstream`"
            )
        return self._upstream

    def pending_ids(self, part: Partition = None) -> pa.Array:
        """What went on through every upstream table and is not yet in the output (only partition
        `part` of it, when given), in the storage order of its input (the last upstream table)."""
        ids = went_on(self.data.tables_dir, self.upstream, not_in=self.name)
        if part is None:
            return ids
        return pa.array([i for i in ids.to_pylist() if in_partition(i, part)], pa.string())

    def todo(self, part: Partition = None) -> Iterator[Any]:
        """The items to do: the pending ids with what `reads` names, joined by sample id."""
        return joined(self.data, self.pending_ids(part), self.reads)

    def idle(self) -> str:
        """Why a run found nothing to do: the first upstream table that is missing or kept nothing,
        else that everything its input passes is decided already."""
        if not self._upstream:  # its input is not a chain of tables (embeddings: a release)
            return f"everything its input holds is in {self.name} already"
        for table in self.upstream:
            if not self.data.table_exists(table):
                return f"table {table} is empty or missing: run the stage that writes it first"
        if not len(went_on(self.data.tables_dir, self.upstream)):  # the usual no-op: skipped
            for i, table in enumerate(self.upstream):
                if not len(went_on(self.data.tables_dir, self.upstream[: i + 1])):
                    return f"table {table} kept no sample: nothing reaches {self.name}"
        return f"every sample that went on through {self.upstream[-1]} is in {self.name} already"

    def start(self, stack: ExitStack) -> None:
        """Load the model (once per run, and only when there is work); enter pools into `stack`."""

    def batches(self, items: Iterator[Any]) -> Iterator[B]:
        """The items cut into the batches `decide` takes; by default lists of `part_size`."""
        return batched(items, self.settings.part_size)  # type: ignore[return-value]

    @abstractmethod
    def decide(self, batch: B) -> Rows:
        """A batch's output rows, each with `status` (ok or dropped) and `reason` (None if ok)."""

    def threads(self, decode_workers: int) -> int:
        """The torch threads this stage's model gets (surd.models.device.plan_threads), set now."""
        sc = self.settings.scale
        per_host = sc.local_workers if sc.local_workers and not sc.dask_address else 1
        return use_threads(plan_threads(self.settings.model_threads, decode_workers, per_host))

    def provenance(self) -> dict[str, Any]:
        """Written into every part: the stage, its model and the settings that made it."""
        out: dict[str, Any] = {
            "stage": self.name,
            "code": code_identity(),
            "settings": self.settings.provenance(),
        }
        if self.model_id is not None:
            out["model_id"] = self.model_id
        return out

    def parts(self, rows: Iterable[Rows]) -> Iterator[Rows]:
        """Decided batches gathered into the parts written: whole batches, at least `part_size`
        rows a part (the last may be smaller). A part is durable whole or not at all, so a killed
        run's written rows end on a batch boundary and its resume meets the very batches an
        uninterrupted run makes: a model's scores do not depend on where a run stopped."""
        group: Rows = []
        for batch in rows:
            group.extend(batch)
            if len(group) >= self.settings.part_size:
                yield group
                group = []
        if group:
            yield group

    def write(self, rows: Rows) -> None:
        """Make one part durable (runs on the writer thread, one part at a time, in order)."""
        self._out.write(rows, provenance=self.provenance())

    def prepare(self) -> None:
        """Before `start`: the output table that all of this run's parts go to."""
        self._out = self.output()


class Filter(Stage[Rows]):
    """A row-wise stage: `keep` says of one row (the columns `reads` names) whether it goes on and,
    if not, why. Its table holds the status columns, and those `extra` adds when `schema` has more."""

    @abstractmethod
    def keep(self, row: dict[str, Any]) -> tuple[bool, str | None]:
        """(True, None) to keep the row; (False, reason) to drop it with that reason."""

    def extra(self, row: dict[str, Any]) -> dict[str, Any]:
        """Columns of its own beside the status (those its `schema` adds); none by default."""
        return {}

    def decide(self, batch: Rows) -> Rows:
        out = []
        for row in batch:
            ok, reason = self.keep(row)
            out.append(
                {
                    "sample_id": row["sample_id"],
                    "status": OK if ok else DROPPED,
                    "reason": None if ok else reason,
                    **self.extra(row),
                }
            )
        return out


def run_stage(
    stage: Stage[Any], progress: Progress = None, part: Partition = None, taken_down: TakenDown = None
) -> StageRun:
    """Run `stage` over what it has to do (only partition `part` of it, when given): the model
    loads only when there is work; each part is written as soon as it is full, so a killed run
    loses at most the rows not yet written and the next run picks them up. `taken_down` (asked
    only when there is work) names the items to drop as `takedown:<id>` instead of working on them."""
    run = StageRun(stage.name, model_id=stage.model_id)
    todo = stage.todo(part)
    first = next(todo, None)
    if first is None:
        run.idle = stage.idle()
        return run
    stage.prepare()
    if stage.reports_progress:
        stage.progress, progress = progress, None
    gone = taken_down() if taken_down is not None and stage.drops_takedowns else {}
    held: Rows = []  # drop rows of taken-down items, written with the next part

    def allowed(items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            tid = gone.get(item["sample_id"]) if gone and isinstance(item, dict) else None
            if tid is None:
                yield item
            else:
                held.append(
                    {"sample_id": item["sample_id"], "status": DROPPED, "reason": f"{TAKEDOWN}:{tid}"}
                )

    def with_held(rows: Rows) -> Rows:
        out = [*rows, *held]
        held.clear()
        if progress:
            progress(len(out))
        return out

    with ExitStack() as stack:
        stage.start(stack)
        run.model_id = stage.model_id
        writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix=f"{stage.name}-writer"))

        def decided() -> Iterator[Rows]:
            for batch in stage.batches(allowed(itertools.chain([first], todo))):
                yield with_held(stage.decide(batch))
            if held:
                yield with_held([])

        def write(rows: Rows) -> Any:
            return writer.submit(stage.write, rows)

        for rows, _ in in_order(stage.parts(decided()), write, WRITES_IN_FLIGHT):
            run.add(rows)
    return run
