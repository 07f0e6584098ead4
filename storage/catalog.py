"""A DuckDB catalog with one view per stage table, release and embedding layer."""

from __future__ import annotations

from pathlib import Path

import duckdb

from storage.layout import DataDir


def _glob(path: Path, pattern: str) -> str:
    return str(path / pattern).replace("'", "''")


def connect(data: DataDir, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """Open DuckDB with a view per table that has at least one part."""
    con = duckdb.connect(database)
    if data.tables_dir.exists():
        for table_dir in sorted(p for p in data.tables_dir.iterdir() if p.is_dir()):
            if any(table_dir.glob("part-*.parquet")):
                con.sql(
                    f"create or replace view {table_dir.name} as select * from "
                    f"read_parquet('{_glob(table_dir, 'part-*.parquet')}', union_by_name=true)"
                )
    if data.releases_dir.exists():
        releases = sorted(
            p
            for p in data.releases_dir.iterdir()
            if not p.name.startswith(".") and (p / "manifest.json").exists()  # never a writer's temp
        )
        for rel in releases:
            con.sql(
                f"create or replace view release_{rel.name} as select * from "
                f"read_parquet('{_glob(rel, 'shard-*.parquet')}')"
            )
        if releases:
            con.sql(f"create or replace view release_latest as select * from release_{releases[-1].name}")
    return con
