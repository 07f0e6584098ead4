"""Stage tables as folders of immutable Parquet parts, each written atomically.

A part is written to a hidden temp file, flushed and fsynced, then renamed into place: a reader
never sees half a part, and a process killed at any moment leaves at most an ignored temp file.
Rows whose key is already in the table are skipped at write time, so a rerun after a kill never
adds a duplicate.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FaultHook = Callable[[str, int], None]
_fault_hook: FaultHook | None = None


def set_fault_hook(hook: FaultHook | None) -> None:
    """Install a callable run after each committed part as hook(table_name, parts_written)."""
    global _fault_hook
    _fault_hook = hook


def fault_point(name: str, count: int) -> None:
    """Where a kill test may stop the process: after `count` units of work named `name`."""
    if _fault_hook is not None:
        _fault_hook(name, count)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that it either exists whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: its half-written bytes go, the space with them
        raise


def sweep_temp(folder: Path) -> int:
    """Remove the temp files (`.tmp-*`) in `folder`: only its writer's lock holder may, when the
    writers that made them are dead (a SIGKILL between write and rename leaves one)."""
    gone = 0
    for tmp in folder.glob(".tmp-*") if folder.is_dir() else ():
        tmp.unlink(missing_ok=True)
        gone += 1
    return gone


def write_parquet_atomic(
    table: pa.Table,
    path: Path,
    row_group_size: int | None = None,
    compression: str = "zstd",
    **options: Any,
) -> None:
    """Written to a temp name, synced, renamed; `options` go to `pq.write_table` as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        pq.write_table(table, tmp, compression=compression, row_group_size=row_group_size, **options)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: its half-written bytes go, the space with them
        raise


class DamagedPart(RuntimeError):
    """A table part that cannot be read (truncated, overwritten): named, with what to do."""


def _damaged(part: Any, exc: Exception) -> DamagedPart:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    return DamagedPart(
        f"damaged table part {part}: {first}. Move it out of the table's folder and rerun: the stage "
        "that wrote it makes its rows again (raw_items: `surd crawl SOURCE --full`)"
    )


def _read_table(part: Any, **kw: Any) -> pa.Table:
    try:
        return pq.read_table(part, **kw)
    except (pa.ArrowInvalid, pa.ArrowIOError) as exc:
        raise _damaged(part, exc) from None


def _parquet_file(part: Any) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(part)
    except (pa.ArrowInvalid, pa.ArrowIOError) as exc:
        raise _damaged(part, exc) from None


def _read_schema(part: Any) -> pa.Schema:
    try:
        return pq.read_schema(part)
    except (pa.ArrowInvalid, pa.ArrowIOError) as exc:
        raise _damaged(part, exc) from None


_PART_IDS: dict[tuple[str, int, int], frozenset[str]] = {}
_PART_IDS_MAX = 20_000  # parts whose keys stay cached in this process
BULK = 4096  # a lookup of more keys than this reads each part's keys without caching them


def to_arrow(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Row dicts as a table of `schema`, built a column at a time: what `pa.Table.from_pylist`
    makes (keys outside the schema ignored, missing ones null), without its per-row cost; a list
    column whose values are all 1-D numpy arrays of one length (CLIP's embeddings) is one
    stacked array."""
    columns = []
    for f in schema:
        values = [r.get(f.name) for r in rows]
        columns.append(_stacked(values, f.type) if pa.types.is_list(f.type) else pa.array(values, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _stacked(values: list[Any], type_: pa.DataType) -> pa.Array:
    first = values[0] if values else None
    if not (
        isinstance(first, np.ndarray)
        and first.ndim == 1
        and all(isinstance(v, np.ndarray) and v.shape == first.shape for v in values)
    ):
        return pa.array(values, type_)
    width = first.shape[0]
    flat = np.stack(values).reshape(-1).astype(type_.value_type.to_pandas_dtype(), copy=False)
    offsets = np.arange(0, width * len(values) + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type_.value_type))


class PartTable:
    """A table stored as `<root>/<name>/part-*.parquet`, keyed by `key`."""

    def __init__(
        self, root: Path, name: str, schema: pa.Schema, key: str = "sample_id", compression: str = "zstd"
    ) -> None:
        self.dir = Path(root) / name
        self.name = name
        self.schema = schema
        self.key = key
        self.compression = compression
        self._written = 0
        self._known: set[str] = set()  # the keys of the parts in `_folded`, for `write`
        self._folded: set[Path] = set()

    def parts(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.glob("part-*.parquet"))

    def part_ids(self, part: Path) -> frozenset[str]:
        """The keys one part holds, read once per process (parts only ever keep their keys:
        `write` makes new parts and `replace_rows` rewrites rows under the same keys)."""
        st = part.stat()
        tag = (str(part), st.st_mtime_ns, st.st_size)
        ids = _PART_IDS.get(tag)
        if ids is None:
            ids = frozenset(_read_table(part, columns=[self.key]).column(0).to_pylist())
            if len(_PART_IDS) >= _PART_IDS_MAX:
                _PART_IDS.pop(next(iter(_PART_IDS)))
            _PART_IDS[tag] = ids
        return ids

    def ids(self) -> set[str]:
        out: set[str] = set()
        for part in self.parts():
            out.update(self.part_ids(part))
        return out

    def known(self) -> set[str]:
        """The keys in storage, kept by this object and grown by the parts it has not seen yet (a
        writer's check costs its new parts, not the whole table, per write). Parts only ever
        keep their keys, so a part that vanished is the one case to read every part again."""
        parts = self.parts()
        if not self._folded.issubset(parts):
            self._known, self._folded = set(), set()
        for part in parts:
            if part not in self._folded:
                self._known.update(self.part_ids(part))
                self._folded.add(part)
        return self._known

    def iter_lookup(self, ids: Iterable[str], columns: Sequence[str]) -> Iterator[dict[str, Any]]:
        """The rows of the given keys, in storage order, reading only the parts that hold one of
        them, a batch of 256 rows at a time; only the asked rows become Python objects."""
        want = set(ids)
        cols = list(dict.fromkeys([self.key, *columns]))
        bulk = len(want) > BULK  # many keys: each part's keys read and dropped, not cached
        for part in self.parts():
            if not want:
                return
            if bulk:
                hits = want.intersection(_read_table(part, columns=[self.key]).column(0).to_pylist())
            else:
                hits = want.intersection(self.part_ids(part))
            if not hits:
                continue
            keys = pa.array(sorted(hits), self.schema.field(self.key).type)
            for batch in _parquet_file(part).iter_batches(batch_size=256, columns=cols):
                yield from batch.filter(pc.is_in(batch.column(0), value_set=keys)).to_pylist()
            want -= hits

    def select(self, keys: pa.Array | pa.ChunkedArray, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The rows of the given keys, only the asked columns, as Arrow tables (a part's hits
        each), in storage order. Each part's keys are matched against one set of the wanted keys
        (linear in the parts' rows, where an Arrow `is_in` over every wanted key would rebuild its
        hash table per part); no Python object is made per row found."""
        want = set(keys.to_pylist())
        cols = list(dict.fromkeys([self.key, *columns]))
        for part in self.parts():
            if not want:
                return
            table = self.read_part(part, cols)
            hits = want.intersection(table.column(self.key).to_pylist())
            if hits:
                found = pa.array(list(hits), self.schema.field(self.key).type)
                yield table.filter(pc.is_in(table.column(self.key), value_set=found))
                want -= hits

    def read_part(self, part: Path, columns: Sequence[str]) -> pa.Table:
        """One part's columns; a column the part was written without (a nullable column added to
        the schema since) comes back as nulls of its type."""
        file = _parquet_file(part)
        have = set(file.schema_arrow.names)
        table = file.read(columns=[c for c in columns if c in have], use_threads=False)
        for c in columns:
            if c not in have:
                table = table.append_column(
                    self.schema.field(c), pa.nulls(len(table), self.schema.field(c).type)
                )
        return table.select(list(columns))

    def lookup(self, ids: Iterable[str], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{key: row} for the given keys (missing keys are absent); see `iter_lookup`."""
        return {row[self.key]: row for row in self.iter_lookup(ids, columns)}

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        parts = self.parts()
        if not parts:
            return self.schema.empty_table().select(list(columns) if columns else self.schema.names)
        tables = [_read_table(p, columns=list(columns) if columns else None) for p in parts]
        return pa.concat_tables(tables)

    def iter_rows(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Stream rows part by part (memory bounded by one part)."""
        for part in self.parts():
            yield from _read_table(part, columns=list(columns) if columns else None).to_pylist()

    def count(self) -> int:
        return sum(_parquet_file(p).metadata.num_rows for p in self.parts())

    def write(
        self, rows: Iterable[dict[str, Any]] | pa.Table, provenance: dict[str, Any] | None = None
    ) -> Path | None:
        """Append rows as one new part; rows whose key exists already are skipped."""
        table = rows if isinstance(rows, pa.Table) else to_arrow(list(rows), self.schema)
        table = table.select(self.schema.names).cast(self.schema)
        existing = self.known()
        keys = table.column(self.key).to_pylist()
        seen: set[str] = set()
        keep = []
        for i, k in enumerate(keys):
            if k not in existing and k not in seen:
                keep.append(i)
                seen.add(k)
        if len(keep) != len(keys):
            table = table.take(pa.array(keep, type=pa.int64()))
        if table.num_rows == 0:
            return None
        meta = {
            b"surd.table": self.name.encode(),
            b"surd.provenance": json.dumps(provenance or {}, sort_keys=True).encode(),
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        path = self.dir / name
        write_parquet_atomic(table, path, compression=self.compression)
        self._written += 1
        fault_point(self.name, self._written)
        return path

    def replace_rows(self, rows: Iterable[dict[str, Any]], provenance: dict[str, Any] | None = None) -> int:
        """Swap existing rows for new versions of them (a retry), part by part: each touched part
        is rewritten whole and renamed over itself, so a reader sees the old part or the new one."""
        new = {r[self.key]: r for r in rows}
        replaced = 0
        for part in self.parts():
            if not new:
                break
            old = _read_table(part)
            keys = old.column(self.key).to_pylist()
            hits = sum(1 for k in keys if k in new)
            if not hits:
                continue
            merged = [new.pop(k) if k in new else row for k, row in zip(keys, old.to_pylist(), strict=True)]
            table = pa.Table.from_pylist(merged, self.schema)
            meta = {
                **(old.schema.metadata or {}),
                b"surd.provenance": json.dumps(provenance or {}, sort_keys=True).encode(),
            }
            write_parquet_atomic(table.replace_schema_metadata(meta), part, compression=self.compression)
            replaced += hits
        if new:
            raise KeyError(f"{len(new)} rows to replace are not in table {self.name}")
        return replaced

    def scrub(self, reasons: dict[str, str]) -> int:
        """Rewrite the rows of these keys as drops with the given reason, every nullable column
        emptied (what a takedown leaves: the ids and why). Only the parts holding such a row not
        yet scrubbed are rewritten, each whole and renamed over itself (a reader sees the old part
        or the new one; a killed run leaves the rest to the next). Returns the rows rewritten."""
        keep = {f.name for f in self.schema if not f.nullable} | {self.key, "status", "reason"}
        done = 0
        for part in self.parts():
            hits = reasons.keys() & self.part_ids(part)
            if not hits:
                continue
            marks = _read_table(part, columns=[self.key, "status", "reason"]).to_pylist()
            if all(
                r["status"] == "dropped" and r["reason"] == reasons[r[self.key]]
                for r in marks
                if r[self.key] in hits
            ):
                continue  # scrubbed already, or dropped as taken down when met (no content kept)
            old = _read_table(part)
            rows = old.to_pylist()
            changed = 0
            for i, row in enumerate(rows):
                why = reasons.get(row[self.key])
                if why is None:
                    continue
                new = {c: (row[c] if c in keep else None) for c in row} | {"status": "dropped", "reason": why}
                if new != row:
                    rows[i], changed = new, changed + 1
            if changed:
                table = pa.Table.from_pylist(rows, old.schema.remove_metadata()).replace_schema_metadata(
                    old.schema.metadata
                )
                write_parquet_atomic(table, part, compression=self.compression)
                done += changed
                fault_point("takedown_scrub", done)  # a kill test stops a takedown half done
        return done

    def provenance(self) -> list[dict[str, Any]]:
        out = []
        for part in self.parts():
            meta = _read_schema(part).metadata or {}
            out.append(json.loads(meta.get(b"surd.provenance", b"{}")))
        return out
