"""The one stage interface and its runner.

A stage says only what it decides: what it reads (`source`, `columns`, or its own `todo`), how it
loads its model once (`start`), how its input is cut into batches (`batches`), and a batch's rows
(`decide`), each row with `status` and `reason`. `run_stage` owns the rest for every stage: the
pending ids (in the input, not yet in the output), the partition, part writing with provenance
(on a write-behind thread, through the one bounded in-order map, so the model never waits on the
disk), progress, and the counts (in = kept + dropped by reason). A new filter stage is a subclass
with `name`, `source`, `columns`, `start` and `decide`.
"""

from __future__ import annotations

import hashlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa

from storage.layout import DataDir
from storage.provenance import code_identity
from storage.schemas import OK
from storage.tables import PartTable
from surd.parallel import batched, in_order, plan_threads, use_threads
from surd.settings import Settings
from surd.stages import takedown

B = TypeVar("B")  # what one batch is, for one stage
T = TypeVar("T")
Rows = list[dict[str, Any]]
Progress = Callable[[int], None] | None
Partition = tuple[int, int] | None  # (k, n): this worker's share of the items; None: all

WRITES_IN_FLIGHT = 2  # parts decided and not yet written: the model runs one part ahead of the disk


@dataclass
class StageRun:
    """What one run of a stage did (the durable counts are in the tables; see surd.status)."""

    stage: str
    processed: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    model_id: str | None = None

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.processed += 1
            if row["status"] == OK:
                self.kept += 1
            else:
                reason = str(row["reason"]).split(":")[0]
                self.dropped[reason] = self.dropped.get(reason, 0) + 1


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary from several runs' (partitions of one stage): numbers add up, per-reason
    counts add up per reason, everything else is the first run's that has it."""
    out: dict[str, Any] = dict(results[0])
    for r in results[1:]:
        for key, value in r.items():
            if isinstance(value, int) and not isinstance(value, bool):
                out[key] += value
            elif isinstance(value, dict):
                merged = dict(out[key])
                for reason, n in value.items():
                    merged[reason] = merged.get(reason, 0) + n
                out[key] = merged
            elif out.get(key) is None:
                out[key] = value
    out["partitions"] = len(results)
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


def pending(
    upstream: PartTable, downstream: PartTable, columns: Sequence[str], part: Partition = None
) -> Iterator[dict[str, Any]]:
    """Upstream rows that went on (status ok) and that the downstream table has not seen yet
    (only partition `part` of them, when given), in storage order.

    The ids come first, from the key and status columns alone; the other columns (an image's
    bytes) are read only for those ids, so a run with nothing to do reads no image."""
    went_on = (r["sample_id"] for r in upstream.iter_rows(["sample_id", "status"]) if r["status"] == OK)
    todo = list(not_done(went_on, downstream.ids(), _same, _same, part))
    if todo:
        yield from upstream.iter_lookup(todo, list(dict.fromkeys(["status", *columns])))


def _same(x: str) -> str:
    return x


class Stage(ABC, Generic[B]):
    """A batch stage: input rows → batches → rows with `status` and `reason` → parts."""

    name: ClassVar[str]  # its output table: its counts in `surd status`, its write lock
    reports_progress: ClassVar[bool] = False  # True: the stage tells `self.progress` itself
    source: ClassVar[str] = ""  # the table it reads (its rows with status ok)
    columns: ClassVar[tuple[str, ...]] = ()  # what it reads of each pending row
    schema: ClassVar[pa.Schema | None] = None  # its output's schema, when not a table of storage.schemas
    drops_takedowns: ClassVar[bool] = True  # False: its input is a release, which has none

    def __init__(self, settings: Settings, data: DataDir) -> None:
        self.settings, self.data = settings, data
        self.model_id: str | None = None  # set by `start` when the stage runs a model
        self.progress: Progress = None

    @property
    def lock(self) -> str:
        """The write lock a run holds (storage.locks): one writer of the output at a time."""
        return self.name

    def output(self) -> PartTable:
        return self.data.table(self.name, self.schema)

    def todo(self, part: Partition = None) -> Iterator[Any]:
        """The items to do, in a stable order: by default the source's rows not yet in the output."""
        return pending(self.data.table(self.source), self.output(), self.columns, part)

    def taken_down(self) -> dict[str, int]:
        """{sample id: takedown id} of the items this run drops with the reason `takedown`
        instead of working on them (surd.stages.takedown); read once per run with work to do."""
        if not self.drops_takedowns:
            return {}
        return takedown.covered(self.settings, self.data)

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
        """Decided rows regrouped into the parts written (`part_size` rows; the last smaller)."""
        return batched(itertools.chain.from_iterable(rows), self.settings.part_size)

    def write(self, rows: Rows) -> None:
        """Make one part durable (runs on the writer thread, one part at a time, in order)."""
        self._out.write(rows, provenance=self.provenance())

    def prepare(self) -> None:
        """Before `start`: the output table that all of this run's parts go to."""
        self._out = self.output()


def run_stage(stage: Stage[Any], progress: Progress = None, part: Partition = None) -> StageRun:
    """Run `stage` over what it has to do (only partition `part` of it, when given): the model
    loads only when there is work; each part is written as soon as it is full, so a killed run
    loses at most the rows not yet written and the next run picks them up."""
    run = StageRun(stage.name, model_id=stage.model_id)
    todo = stage.todo(part)
    first = next(todo, None)
    if first is None:
        return run
    stage.prepare()
    if stage.reports_progress:
        stage.progress, progress = progress, None
    gone = stage.taken_down()
    held: Rows = []  # drop rows of taken-down items, written with the next part

    def allowed(items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            tid = gone.get(item["sample_id"]) if gone and isinstance(item, dict) else None
            if tid is None:
                yield item
            else:
                held.append(takedown.drop_row(item["sample_id"], tid))

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
