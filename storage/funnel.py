"""What went on through a chain of stage tables, computed by DuckDB over the parts' key, status and
reason columns (multi-threaded, no Python object per row).

A sample *went on* through a chain of tables when every one of them holds a row for it with status
`ok`. That is the input of the next stage, and what its counts are taken against: a stage's rows
for samples its input no longer passes (a stage inserted before it on an existing data root, or a
row written before an earlier stage dropped the sample) are counted apart, as `outside`, so that
in = out + dropped + pending holds for every stage at any time, and pending is never negative.

The chain (which tables, in which order) is the caller's: the pipeline's one declaration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from storage.schemas import OK


def part_files(tables_dir: Path, name: str) -> list[str]:
    """A table's part files in storage order (the order `PartTable.parts` reads them)."""
    folder = tables_dir / name
    return [str(p) for p in sorted(folder.glob("part-*.parquet"))] if folder.exists() else []


@dataclass
class Counts:
    """One stage's counts against what its input passes: came_in = out + dropped + pending."""

    came_in: int = 0
    out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # by reason (the part before any ':')
    pending: int = 0
    outside: int = 0  # its rows for samples its input does not pass (now)

    def as_dict(self) -> dict[str, object]:
        return {
            "in": self.came_in,
            "out": self.out,
            "dropped": self.dropped,
            "pending": self.pending,
            "outside": self.outside,
        }


class Funnel:
    """One DuckDB connection over a data root's stage tables (`tables_dir/<name>/part-*`)."""

    def __init__(self, tables_dir: Path) -> None:
        self.tables_dir = tables_dir
        self.con = duckdb.connect()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Funnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kept_through(self, chain: Sequence[str], view: str) -> bool:
        """Create temp table `view`(sample_id) of what went on through `chain`, in the storage order
        of its last table; False (and no view) when a table of it has no part yet."""
        files = [part_files(self.tables_dir, t) for t in chain]
        if not chain or not all(files):
            return False
        where = " and ".join(
            ["status = ?"]
            + ["sample_id in (select sample_id from read_parquet(?, union_by_name = true) where status = ?)"]
            * (len(chain) - 1)
        )
        params: list[object] = [files[-1], OK]
        for f in files[:-1]:
            params += [f, OK]
        self.con.execute(
            f"create or replace temp table {view} as select sample_id, row_number() over "
            "(order by filename, file_row_number) as pos from "
            f"read_parquet(?, union_by_name = true, filename = true, file_row_number = true) where {where}",
            params,
        )
        return True

    def went_on(self, chain: Sequence[str], not_in: str | None = None) -> pa.Array:
        """The sample ids that went on through every table of `chain` (in the storage order of its
        last), without those table `not_in` already holds (a stage's own output: its pending)."""
        if not self._kept_through(chain, "went_on"):
            return pa.array([], pa.string())
        query = "select sample_id from went_on"
        params: list[object] = []
        done = part_files(self.tables_dir, not_in) if not_in else []
        if done:
            query += " where sample_id not in (select sample_id from read_parquet(?, union_by_name = true))"
            params.append(done)
        query += " order by pos"
        return self.con.sql(query, params=params).to_arrow_table().column(0).combine_chunks()

    def counts(self, chain: Sequence[str]) -> dict[str, Counts]:
        """Each table's counts against what went on through the tables before it; the first
        table's input is its own rows (the head of the chain: what the crawl wrote)."""
        out: dict[str, Counts] = {}
        came_in = 0
        for k, name in enumerate(chain):
            files = part_files(self.tables_dir, name)
            before = f"w{k - 1}"
            inside = "true" if k == 0 else f"sample_id in (select sample_id from {before})"
            groups: list[tuple[bool, bool, str, int]] = []
            if files:
                groups = self.con.execute(
                    f"select {inside}, coalesce(status = ?, false), "
                    "split_part(coalesce(reason, 'None'), ':', 1), count(*) "
                    "from read_parquet(?, union_by_name = true) group by all",
                    [OK, files],
                ).fetchall()
            if k == 0:
                came_in = sum(n for *_, n in groups)
            c = Counts(came_in=came_in)
            for within, kept, reason, n in groups:
                if not within:
                    c.outside += n
                elif kept:
                    c.out += n
                else:
                    c.dropped[reason] = c.dropped.get(reason, 0) + n
            c.dropped = dict(sorted(c.dropped.items()))
            c.pending = c.came_in - c.out - sum(c.dropped.values())
            out[name] = c
            if files:
                self.con.execute(
                    f"create or replace temp table w{k} as select sample_id from read_parquet(?, "
                    f"union_by_name = true) where status = ? and {inside}",
                    [files, OK],
                )
            else:
                self.con.execute(f"create or replace temp table w{k} (sample_id varchar)")
            came_in = c.out
        return out

    def first_drop(self, chain: Sequence[str], ids: pa.Array) -> dict[str, tuple[str, str]]:
        """{sample id: (table, reason)} of the first table in `chain` that dropped each of `ids`;
        ids no table dropped (pending somewhere, or kept throughout) are absent."""
        found: dict[str, tuple[str, str]] = {}
        if not len(ids):
            return found
        self.con.register("asked", pa.table({"sample_id": ids}))
        try:
            for name in chain:
                files = part_files(self.tables_dir, name)
                if not files:
                    continue
                rows = self.con.execute(
                    "select sample_id, coalesce(reason, 'None') from read_parquet(?, union_by_name = true) "
                    "where status is distinct from ? and sample_id in (select sample_id from asked)",
                    [files, OK],
                ).fetchall()
                for sid, reason in rows:
                    found.setdefault(sid, (name, reason))
        finally:
            self.con.unregister("asked")
        return found


def went_on(tables_dir: Path, chain: Sequence[str], not_in: str | None = None) -> pa.Array:
    """`Funnel.went_on` on a connection of its own."""
    with Funnel(tables_dir) as f:
        return f.went_on(chain, not_in)
