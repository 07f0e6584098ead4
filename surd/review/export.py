"""Review exports: every item's outcome, or the whole decision log, as Parquet or JSON lines.

Rows stream from the database in chunks and are written a row group at a time, so an export of
hundreds of thousands of decisions needs little memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

OUTCOMES = pa.schema(
    [
        ("sample_id", pa.string()),
        ("state", pa.string()),
        ("decision", pa.string()),
        ("reason", pa.string()),
        ("simple_prompt", pa.string()),
        ("caption", pa.string()),
        ("actor", pa.string()),
        ("actor_kind", pa.string()),
        ("decided_at", pa.string()),
        ("source", pa.string()),
        ("margin", pa.float64()),
        ("comments", pa.string()),  # stewards' comments and flags on the item, one a line
    ]
)
AUDIT = pa.schema(
    [
        ("id", pa.int64()),
        ("sample_id", pa.string()),
        ("actor", pa.string()),
        ("actor_kind", pa.string()),
        ("decision", pa.string()),
        ("reason", pa.string()),
        ("simple_prompt", pa.string()),
        ("previous_id", pa.int64()),
        ("previous_decision", pa.string()),
        ("previous_reason", pa.string()),
        ("previous_prompt", pa.string()),
        ("created_at", pa.string()),
        ("view", pa.string()),  # single | grid | api | admin
        ("guideline_version", pa.string()),
    ]
)


def _chunks(rows: Iterable[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while chunk := list(islice(it, n)):
        yield chunk


def write_parquet(rows: Iterable[dict[str, Any]], path: Path, chunk: int = 10_000) -> int:
    """Write outcome or audit rows (the schema is picked from the first row); returns the row count."""
    it = iter(rows)
    first = next(it, None)
    schema = AUDIT if first is not None and "previous_id" in first else OUTCOMES
    n = 0
    tmp = path.with_name(path.name + ".partial")
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        if first is not None:
            for batch in _chunks([first, *islice(it, chunk - 1)], chunk):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
            for batch in _chunks(it, chunk):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
    tmp.replace(path)
    return n


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    n = 0
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def jsonl_chunks(rows: Iterable[dict[str, Any]], lines: int = 1000) -> Iterator[bytes]:
    """Rows as JSON lines, `lines` at a time (for a streamed HTTP response)."""
    for batch in _chunks(rows, lines):
        yield "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch).encode()
