"""A read-only DuckDB catalog: one view per stage table and release of a data root.

Read-only by construction, not by looking at the first word of a query. DuckDB itself is told that
this session touches no file: external access off (no COPY, EXPORT, ATTACH, read_csv of a path,
INSTALL or LOAD of an extension), known extensions never loaded by themselves, and the
configuration locked (no SET or RESET can undo any of it). The views read Arrow datasets that this
module opens over the tables' parts and the releases' shards, so the data reaches DuckDB without
DuckDB opening a file. On top, `read_statements` admits only queries: SELECT (with its CTEs and
subqueries) and EXPLAIN or EXPLAIN ANALYZE of one; anything else (a CREATE, INSERT or DROP on the
session's own in-memory catalog, a PRAGMA, a LOAD of a built-in extension) is refused before it runs.

Files outside the data root are out of reach on purpose: a query sees the catalog's views and
nothing else (for other files, run DuckDB yourself).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from storage.layout import DataDir

LOCKED = {
    "enable_external_access": False,  # no file, no network, no extension loaded from disk
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,  # set last: nothing above can be changed by a query
}
QUERY = "SELECT"
_EXPLAIN = re.compile(r"^\s*explain\s+(?:analyze\s+)?(?:\((?:[^()]|\([^()]*\))*\)\s*)?", re.I)


class NotARead(ValueError):
    """A statement that is not a query (or a query's EXPLAIN); its kind is `kind`."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def read_statements(query: str) -> list[str]:
    """The statements of `query`, each checked to be a SELECT or an EXPLAIN [ANALYZE] of exactly
    one SELECT; raises `NotARead` naming the first kind that is not, `duckdb.Error` on bad SQL."""
    found = duckdb.extract_statements(query)
    if not found:
        raise NotARead("nothing to run")
    out = []
    for st in found:
        kind = st.type.name
        if kind == "EXPLAIN":
            inner = duckdb.extract_statements(_EXPLAIN.sub("", st.query, count=1))
            if len(inner) != 1 or inner[0].type.name != QUERY:
                raise NotARead("EXPLAIN " + (inner[0].type.name if len(inner) == 1 else "of several"))
        elif kind != QUERY:
            raise NotARead(kind)
        out.append(st.query)
    return out


def _widened(t: pa.DataType) -> pa.DataType:
    """float16 (CLIP's image embeddings) as float32, which DuckDB's Arrow scan reads; lists too."""
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_widened(t.value_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_widened(t.value_type), t.list_size)
    return t


def _dataset(files: list[Path]) -> ds.Dataset:
    """The files as one Arrow dataset; a column some parts were written without reads as nulls."""
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    schema = pa.schema([f.with_type(_widened(f.type)) for f in schema])
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet")


def views(data: DataDir) -> dict[str, list[Path]]:
    """{view: its files}: a view per table with at least one part, per release, and
    `release_latest`; a writer's temp folder is never one."""
    out: dict[str, list[Path]] = {}
    if data.tables_dir.exists():
        for table_dir in sorted(p for p in data.tables_dir.iterdir() if p.is_dir()):
            parts = sorted(table_dir.glob("part-*.parquet"))
            if parts:
                out[table_dir.name] = parts
    if data.releases_dir.exists():
        found = sorted(
            p
            for p in data.releases_dir.iterdir()
            if not p.name.startswith(".") and (p / "manifest.json").exists()
        )
        for rel in found:
            shards = sorted(rel.glob("shard-*.parquet"))
            if shards:
                out[f"release_{rel.name}"] = shards
        if found and f"release_{found[-1].name}" in out:
            out["release_latest"] = out[f"release_{found[-1].name}"]
    return out


def connect(data: DataDir) -> duckdb.DuckDBPyConnection:
    """A DuckDB session that reads the data root's views and can write, load or set nothing."""
    con = duckdb.connect(":memory:", config=dict(LOCKED))
    for name, files in views(data).items():
        con.register(name, _dataset(files))
    return con
