"""What a stage gives the release: columns, each with its type and description, taken from a
column of the stage's own table or derived from it. The release's schema, its row assembly and
the dataset card's column table are made from these (surd.stages.release, surd.stages.card)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from storage.layout import DataDir

Derive = Callable[[DataDir, pa.Array], pa.Array]  # (data root, sorted sample ids) → one value each


@dataclass(frozen=True)
class ReleaseColumn:
    """One column of every release: `name`, its Arrow `type`, what it holds (`description`, the
    card's words), and where it comes from: the stage table's column `column` (default: `name`)
    looked up by sample id, or `derive` (a function of the data root and the ids)."""

    name: str
    type: pa.DataType
    description: str
    column: str | None = None
    derive: Derive | None = None

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.type)

    def values(self, data: DataDir, table: str, ids: pa.Array) -> pa.Array:
        """One value per id (null where the stage has no row for it, or stored none)."""
        if self.derive is not None:
            return self.derive(data, ids).cast(self.type)
        return lookup(data, table, self.column or self.name, ids).cast(self.type)


def lookup(data: DataDir, table: str, column: str, ids: pa.Array) -> pa.Array:
    """Table `table`'s `column` for each of `ids`, in their order; null where it has no row."""
    if not len(ids) or not data.table_exists(table):
        return pa.nulls(len(ids))
    found = list(data.table(table).select(ids, [column]))
    if not found:
        return pa.nulls(len(ids))
    got = pa.concat_tables(found, promote_options="permissive")
    at = pc.index_in(ids, value_set=got.column("sample_id"))
    return pc.take(got.column(column), at).combine_chunks()
