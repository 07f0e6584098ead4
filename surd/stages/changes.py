"""What changed between two releases, sample by sample: added, removed (and why) or changed (which
columns). Every release writes its changes against its parent as `changes.parquet` (and a section
of its card); `surd release diff vA vB` compares any two."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.releases import manifest
from storage.tables import write_parquet_atomic

CHANGES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("change", pa.string(), nullable=False),  # added | removed | changed
        pa.field("reason", pa.string()),  # removed: why (takedown:<id>, not_accepted, source_removed…)
        pa.field("fields", pa.list_(pa.string())),  # changed: the columns whose values differ
        pa.field("since", pa.string()),  # the release compared with
    ]
)
SKIP = ("image",)  # compared through `sha256`


def _rows(folder: Path) -> pa.Table:
    """A release's columns but the image, every shard, in sample-id order."""
    tables = []
    for shard in sorted(folder.glob("shard-*.parquet")):
        names = [n for n in pq.read_schema(shard).names if n not in SKIP]
        tables.append(pq.read_table(shard, columns=names))
    if not tables:
        return pa.table({"sample_id": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive").sort_by("sample_id")


def _differs(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row, whether two columns' values differ (two nulls are equal)."""
    same = pc.fill_null(pc.equal(a, b), False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return pc.invert(pc.or_(same, both_null))


def compare(old: Path, new: Path, why_removed: dict[str, str] | None = None, new_name: str = "") -> pa.Table:
    """The rows of CHANGES taking release `old` to release `new` (folders; `new` may be a release
    being written, named `new_name`), removed rows with `why_removed`'s reason (else
    `not_in_<new>`)."""
    a, b = _rows(old), _rows(new)
    since = manifest(old)["release"]
    ids_a, ids_b = a.column("sample_id"), b.column("sample_id")
    added = b.filter(pc.invert(pc.is_in(ids_b, value_set=ids_a.combine_chunks()))).column("sample_id")
    gone = a.filter(pc.invert(pc.is_in(ids_a, value_set=ids_b.combine_chunks()))).column("sample_id")
    both_a = a.filter(pc.is_in(ids_a, value_set=ids_b.combine_chunks()))
    both_b = b.filter(pc.is_in(ids_b, value_set=ids_a.combine_chunks()))
    fields: list[list[str]] = [[] for _ in range(len(both_a))]
    for name in both_b.column_names:
        if name == "sample_id" or name not in both_a.column_names:
            continue
        col_a, col_b = both_a.column(name), both_b.column(name)
        if col_a.type != col_b.type:
            col_a, col_b = col_a.cast(pa.string()), col_b.cast(pa.string())
        for k, d in enumerate(_differs(col_a, col_b).to_pylist()):
            if d:
                fields[k].append(name)
    why = why_removed or {}
    new_name = new_name or (manifest(new)["release"] if (new / "manifest.json").exists() else new.name)
    rows = (
        [{"sample_id": s, "change": "added"} for s in added.to_pylist()]
        + [
            {"sample_id": s, "change": "removed", "reason": why.get(s, f"not_in_{new_name}")}
            for s in gone.to_pylist()
        ]
        + [
            {"sample_id": s, "change": "changed", "fields": f}
            for s, f in zip(both_a.column("sample_id").to_pylist(), fields, strict=True)
            if f
        ]
    )
    for r in rows:
        r["since"] = since
    return pa.Table.from_pylist(rows, CHANGES).sort_by([("change", "ascending"), ("sample_id", "ascending")])


def write(changes: pa.Table, path: Path) -> None:
    write_parquet_atomic(changes, path)


def summary(changes: pa.Table) -> dict[str, Any]:
    """{added: n, removed: {reason: n}, changed: {column: n}} (reasons by their part before ':')."""
    rows = changes.to_pylist()
    removed = Counter(str(r["reason"]).split(":")[0] for r in rows if r["change"] == "removed")
    changed = Counter(f for r in rows if r["change"] == "changed" for f in r["fields"] or [])
    return {
        "added": sum(r["change"] == "added" for r in rows),
        "removed": dict(sorted(removed.items())),
        "changed": dict(sorted(changed.items())),
    }
