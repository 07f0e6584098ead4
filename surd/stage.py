"""What every stage shares: its pending input, batching into parts, and run counts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from storage.schemas import OK
from storage.tables import PartTable

T = TypeVar("T")


@dataclass
class StageRun:
    """What one run of a stage did (the durable counts are in the tables; see surd.status)."""

    stage: str
    processed: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.processed += 1
            if row["status"] == OK:
                self.kept += 1
            else:
                reason = str(row["reason"]).split(":")[0]
                self.dropped[reason] = self.dropped.get(reason, 0) + 1


Partition = tuple[int, int] | None  # (k, n): this worker's share of the items; None: all


def in_partition(sample_id: str, part: Partition) -> bool:
    """A stable split of the items into n disjoint partitions (by a hash of the id)."""
    if part is None:
        return True
    k, n = part
    return int(hashlib.sha1(sample_id.encode()).hexdigest()[:8], 16) % n == k


def pending(
    upstream: PartTable, downstream: PartTable, columns: Sequence[str], part: Partition = None
) -> Iterator[dict[str, Any]]:
    """Upstream rows that went on (status ok) and that the downstream table has not seen yet
    (only partition `part` of them, when given), in storage order.

    The ids come first, from the key and status columns alone; the other columns (an image's
    bytes) are read only for those ids, so a run with nothing to do reads no image."""
    done = downstream.ids()
    todo = [
        r["sample_id"]
        for r in upstream.iter_rows(["sample_id", "status"])
        if r["status"] == OK and r["sample_id"] not in done and in_partition(r["sample_id"], part)
    ]
    if todo:
        yield from upstream.iter_lookup(todo, list(dict.fromkeys(["status", *columns])))


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class PartWriter:
    """Rows gathered into parts of `size` as they come (the last part may be smaller), each part
    written at once, so a killed run loses at most the rows not yet written."""

    table: PartTable
    size: int
    run: StageRun
    progress: Callable[[int], None] | None
    provenance: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Take a batch's rows (progress moves per batch; parts are written when full)."""
        before = len(self.rows)
        self.rows.extend(rows)
        if self.progress:
            self.progress(len(self.rows) - before)
        while len(self.rows) >= self.size:
            self._flush(self.rows[: self.size])
            self.rows = self.rows[self.size :]

    def close(self) -> None:
        if self.rows:
            self._flush(self.rows)
            self.rows = []

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        self.table.write(rows, provenance=self.provenance)
        self.run.add(rows)
